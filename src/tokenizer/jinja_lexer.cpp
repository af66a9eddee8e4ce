#include "tokenizer/jinja_lexer.h"

#include <algorithm>
#include <cctype>

#include "common/error.h"
#include "tokenizer/jinja_text.h"
#include "tokenizer/utf8.h"

namespace tandem::jinja {

std::string format_loc(SourceLoc loc) {
  return "chat template line " + std::to_string(loc.line) + ":" + std::to_string(loc.column);
}

namespace {

// Text after the block whitespace rules, with the source offset of each byte
// so that errors point into the template as written.
struct Preprocessed {
  std::string text;
  std::vector<size_t> origin;  // (text.size()) source offsets
};

bool is_line_start(const std::string& s, size_t i) {
  if (i == 0) return true;
  char p = s[i - 1];
  if (p == '\n' || p == '\r') return true;
  // U+2028 / U+2029 end lines too (E2 80 A8 / E2 80 A9).
  return i >= 3 && static_cast<unsigned char>(s[i - 3]) == 0xE2 && static_cast<unsigned char>(s[i - 2]) == 0x80 &&
         (static_cast<unsigned char>(s[i - 1]) == 0xA8 || static_cast<unsigned char>(s[i - 1]) == 0xA9);
}

Preprocessed preprocess(const std::string& source) {
  Preprocessed cur;
  size_t n = source.size();
  if (n > 0 && source[n - 1] == '\n') --n;  // a final newline is dropped
  cur.text = source.substr(0, n);
  cur.origin.resize(n);
  for (size_t i = 0; i < n; ++i) cur.origin[i] = i;

  auto rebuild = [](const Preprocessed& in, const std::vector<bool>& keep) {
    Preprocessed out;
    for (size_t i = 0; i < in.text.size(); ++i) {
      if (keep[i]) {
        out.text.push_back(in.text[i]);
        out.origin.push_back(in.origin[i]);
      }
    }
    return out;
  };

  // lstrip_blocks: spaces and tabs from a line start up to "{%", "{#" or "{-".
  {
    const std::string& s = cur.text;
    std::vector<bool> keep(s.size(), true);
    for (size_t i = 0; i < s.size(); ++i) {
      if (!is_line_start(s, i)) continue;
      size_t j = i;
      while (j < s.size() && (s[j] == ' ' || s[j] == '\t')) ++j;
      if (j + 1 < s.size() && s[j] == '{' && (s[j + 1] == '%' || s[j + 1] == '#' || s[j + 1] == '-')) {
        for (size_t k = i; k < j; ++k) keep[k] = false;
        i = j + 1;
      }
    }
    cur = rebuild(cur, keep);
  }
  // trim_blocks: the newline right after "%}", "#}" or "-}".
  {
    const std::string& s = cur.text;
    std::vector<bool> keep(s.size(), true);
    for (size_t i = 0; i + 2 < s.size(); ++i) {
      if ((s[i] == '%' || s[i] == '#' || s[i] == '-') && s[i + 1] == '}' && s[i + 2] == '\n') {
        keep[i + 2] = false;
        i += 2;
      }
    }
    cur = rebuild(cur, keep);
  }
  // {% generation %} / {% endgeneration %} markers (training-time only) vanish,
  // taking surrounding whitespace along where they carry a "-".
  {
    const std::string& s = cur.text;
    std::vector<bool> keep(s.size(), true);
    size_t last_end = 0;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      if (s[i] != '{' || s[i + 1] != '%') continue;
      size_t j = i + 2;
      bool lstrip = j < s.size() && s[j] == '-';
      if (lstrip) ++j;
      while (size_t w = whitespace_length(s, j)) j += w;
      if (s.compare(j, 3, "end") == 0) j += 3;
      if (s.compare(j, 10, "generation") != 0) continue;
      j += 10;
      while (size_t w = whitespace_length(s, j)) j += w;
      bool rstrip = j < s.size() && s[j] == '-';
      if (rstrip) ++j;
      if (s.compare(j, 2, "%}") != 0) continue;
      j += 2;
      for (size_t k = i; k < j; ++k) keep[k] = false;
      if (lstrip) {
        size_t b = i;
        while (b > last_end) {
          size_t w = whitespace_length_before(s, b);
          if (w == 0 || b - w < last_end) break;
          b -= w;
        }
        for (size_t k = b; k < i; ++k) keep[k] = false;
      }
      size_t e = j;
      while (size_t w = whitespace_length(s, e)) e += w;
      if (rstrip)
        for (size_t k = j; k < e; ++k) keep[k] = false;
      last_end = e;
      i = e - 1;
    }
    cur = rebuild(cur, keep);
  }
  return cur;
}

bool is_word(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

class Lexer {
 public:
  explicit Lexer(const std::string& source) : source_(source), pre_(preprocess(source)), s_(pre_.text) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < source_.size(); ++i)
      if (source_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<Token> run() {
    while (pos_ < s_.size()) {
      bool at_text = tokens_.empty() || last_is(TokenType::CloseStatement) || last_is(TokenType::CloseExpression) ||
                     last_is(TokenType::Comment);
      if (at_text) {
        size_t start = pos_;
        while (pos_ < s_.size() && !(s_[pos_] == '{' && pos_ + 1 < s_.size() &&
                                     (s_[pos_ + 1] == '%' || s_[pos_ + 1] == '{' || s_[pos_ + 1] == '#')))
          ++pos_;
        if (pos_ > start) {
          push(TokenType::Text, s_.substr(start, pos_ - start), start);
          continue;
        }
      }
      if (starts("{#")) {
        lex_comment();
        continue;
      }
      if (starts("{%-") || starts("{{-")) {
        strip_trailing_text();
        bool stmt = s_[pos_ + 1] == '%';
        push(stmt ? TokenType::OpenStatement : TokenType::OpenExpression, stmt ? "{%" : "{{", pos_);
        if (!stmt) brace_depth_ = 0;
        pos_ += 3;
        continue;
      }
      while (size_t w = whitespace_length(s_, pos_)) pos_ += w;
      if (pos_ >= s_.size()) break;
      if (starts("-%}") || starts("-}}")) {
        bool stmt = s_[pos_ + 1] == '%';
        push(stmt ? TokenType::CloseStatement : TokenType::CloseExpression, stmt ? "%}" : "}}", pos_);
        pos_ += 3;
        while (size_t w = whitespace_length(s_, pos_)) pos_ += w;
        continue;
      }
      lex_symbol();
    }
    return std::move(tokens_);
  }

 private:
  SourceLoc loc_at(size_t p) const {
    size_t off = p < pre_.origin.size() ? pre_.origin[p] : source_.size();
    // line_starts_ is sorted: find the line holding `off`, then count characters.
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), off);
    size_t line_index = static_cast<size_t>(it - line_starts_.begin()) - 1;
    SourceLoc loc{static_cast<int>(line_index + 1), 1};
    for (size_t i = line_starts_[line_index]; i < off && i < source_.size(); ++i)
      if ((static_cast<unsigned char>(source_[i]) & 0xC0) != 0x80) ++loc.column;
    return loc;
  }
  [[noreturn]] void fail(size_t p, const std::string& msg) const { throw Error(format_loc(loc_at(p)) + ": " + msg); }
  bool starts(const char* lit) const { return s_.compare(pos_, std::char_traits<char>::length(lit), lit) == 0; }
  bool last_is(TokenType t) const { return !tokens_.empty() && tokens_.back().type == t; }
  void push(TokenType t, std::string v, size_t at) { tokens_.push_back(Token{t, std::move(v), loc_at(at)}); }

  void strip_trailing_text() {
    if (!last_is(TokenType::Text)) return;
    tokens_.back().value = trim_whitespace(tokens_.back().value, false, true);
    if (tokens_.back().value.empty()) tokens_.pop_back();
  }

  void lex_comment() {
    size_t start = pos_;
    pos_ += 2;
    bool strip_before = pos_ < s_.size() && s_[pos_] == '-';
    if (strip_before) ++pos_;
    size_t end = s_.find("#}", pos_);
    if (end == std::string::npos) fail(start, "comment '{#' is never closed with '#}'");
    std::string body = s_.substr(pos_, end - pos_);
    bool strip_after = !body.empty() && body.back() == '-';
    if (strip_after) body.pop_back();
    if (strip_before) strip_trailing_text();
    push(TokenType::Comment, body, start);
    pos_ = end + 2;
    if (strip_after)
      while (size_t w = whitespace_length(s_, pos_)) pos_ += w;
  }

  void lex_string(char quote) {
    size_t start = pos_;
    ++pos_;
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail(start, "string literal is never closed");
      char c = s_[pos_];
      if (c == quote) break;
      if (c == '\\') {
        if (pos_ + 1 >= s_.size()) fail(start, "string literal is never closed");
        char e = s_[pos_ + 1];
        pos_ += 2;
        switch (e) {
          case 'n': out += '\n'; break;
          case 't': out += '\t'; break;
          case 'r': out += '\r'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'v': out += '\v'; break;
          case '\'': out += '\''; break;
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          case '\n': break;  // a backslash ends the line: a continuation, as in Python
          case 'x':
          case 'u': {
            size_t len = e == 'x' ? 2 : 4;
            if (pos_ + len > s_.size()) fail(pos_ - 2, "invalid escape sequence in string literal");
            uint32_t cp = 0;
            for (size_t k = 0; k < len; ++k) {
              char h = s_[pos_ + k];
              int d = is_digit(h) ? h - '0' : (h >= 'a' && h <= 'f') ? h - 'a' + 10 : (h >= 'A' && h <= 'F') ? h - 'A' + 10 : -1;
              if (d < 0) fail(pos_ - 2, "invalid escape sequence in string literal");
              cp = cp * 16 + static_cast<uint32_t>(d);
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) fail(pos_ - 2, "surrogate escape \\u" + s_.substr(pos_, 4) + " is not supported");
            tok::append_utf8(out, static_cast<char32_t>(cp));
            pos_ += len;
            break;
          }
          default:
            fail(pos_ - 2, std::string("unsupported escape sequence '\\") + e + "' in string literal");
        }
        continue;
      }
      out.push_back(c);
      ++pos_;
    }
    ++pos_;  // closing quote
    push(TokenType::String, std::move(out), start);
  }

  void lex_symbol() {
    size_t start = pos_;
    char c = s_[pos_];
    struct Sym {
      const char* text;
      TokenType type;
    };
    static constexpr Sym kSymbols[] = {
        {"{%", TokenType::OpenStatement}, {"%}", TokenType::CloseStatement}, {"{{", TokenType::OpenExpression},
        {"}}", TokenType::CloseExpression}, {"(", TokenType::OpenParen},      {")", TokenType::CloseParen},
        {"{", TokenType::OpenBrace},        {"}", TokenType::CloseBrace},     {"[", TokenType::OpenBracket},
        {"]", TokenType::CloseBracket},     {",", TokenType::Comma},          {".", TokenType::Dot},
        {":", TokenType::Colon},            {"|", TokenType::Pipe},           {"<=", TokenType::Operator},
        {">=", TokenType::Operator},        {"==", TokenType::Operator},      {"!=", TokenType::Operator},
        {"<", TokenType::Operator},         {">", TokenType::Operator},       {"+", TokenType::Operator},
        {"-", TokenType::Operator},         {"~", TokenType::Operator},       {"**", TokenType::Operator},
        {"*", TokenType::Operator},         {"//", TokenType::Operator},      {"/", TokenType::Operator},
        {"%", TokenType::Operator},         {"=", TokenType::Assign},
    };
    for (const Sym& sym : kSymbols) {
      std::string text = sym.text;
      if (text == "}}" && brace_depth_ > 0) continue;
      if (!starts(sym.text)) continue;
      push(sym.type, text, start);
      if (sym.type == TokenType::OpenExpression) brace_depth_ = 0;
      if (sym.type == TokenType::OpenBrace) ++brace_depth_;
      if (sym.type == TokenType::CloseBrace) --brace_depth_;
      pos_ += text.size();
      return;
    }
    if (c == '\'' || c == '"') {
      lex_string(c);
      return;
    }
    if (is_digit(c)) {
      while (pos_ < s_.size() && is_digit(s_[pos_])) ++pos_;
      bool is_float = false;
      if (!last_is(TokenType::Dot) && pos_ + 1 < s_.size() && s_[pos_] == '.' && is_digit(s_[pos_ + 1])) {
        ++pos_;
        while (pos_ < s_.size() && is_digit(s_[pos_])) ++pos_;
        is_float = true;
      }
      push(is_float ? TokenType::Float : TokenType::Integer, s_.substr(start, pos_ - start), start);
      return;
    }
    if (is_word(c)) {
      while (pos_ < s_.size() && is_word(s_[pos_])) ++pos_;
      push(TokenType::Identifier, s_.substr(start, pos_ - start), start);
      return;
    }
    std::string shown = (static_cast<unsigned char>(c) < 0x20) ? "\\x" + std::to_string(static_cast<int>(c)) : std::string(1, c);
    fail(start, "unexpected character '" + shown + "' inside a tag");
  }

  const std::string& source_;
  Preprocessed pre_;
  const std::string& s_;
  std::vector<size_t> line_starts_;  // source offsets where lines begin
  size_t pos_ = 0;
  int brace_depth_ = 0;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> tokenize(const std::string& source) { return Lexer(source).run(); }

}  // namespace tandem::jinja
