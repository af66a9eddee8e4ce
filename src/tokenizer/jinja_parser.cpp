#include "tokenizer/jinja_parser.h"

#include <charconv>
#include <cmath>
#include <cstdlib>

#include "common/error.h"
#include "tokenizer/jinja_builtins.h"
#include "tokenizer/jinja_lexer.h"

namespace tandem::jinja {
namespace {

// Whether `name` is read anywhere under `node` (macros accept extra
// arguments only when their body reads varargs / kwargs).
bool reads_name(const Node& node, const std::string& name) {
  if (node.kind == NodeKind::Identifier && node.name == name) return true;
  for (const auto* list : {&node.children, &node.defaults, &node.body, &node.else_body})
    for (const auto& c : *list)
      if (c && reads_name(*c, name)) return true;
  for (const auto& kv : node.kwargs)
    if (kv.second && reads_name(*kv.second, name)) return true;
  return false;
}

void note_special_names(Node& macro) {
  for (const char* special : {"varargs", "kwargs"}) {
    bool used = false;
    for (const auto& stmt : macro.body) used = used || reads_name(*stmt, special);
    if (used) macro.ops.emplace_back(special);
  }
}

NodePtr make(NodeKind kind, SourceLoc loc) {
  auto n = std::make_unique<Node>();
  n->kind = kind;
  n->loc = loc;
  return n;
}

bool is_keyword(const std::string& s) {
  return s == "and" || s == "or" || s == "not" || s == "in" || s == "is" || s == "if" || s == "else";
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  Program run() {
    Program program;
    while (pos_ < t_.size()) {
      if (at_statement({"endif", "endfor", "endmacro", "endset", "endcall", "endfilter", "elif", "else"}))
        fail(t_[pos_ + 1].loc, "'{% " + t_[pos_ + 1].value + " %}' without a matching opening block");
      parse_any(program.body);
    }
    return program;
  }

 private:
  // ---- token helpers ----
  [[noreturn]] void fail(SourceLoc loc, const std::string& msg) const { throw Error(format_loc(loc) + ": " + msg); }
  SourceLoc here() const { return pos_ < t_.size() ? t_[pos_].loc : (t_.empty() ? SourceLoc{1, 1} : t_.back().loc); }
  const Token* peek(size_t k = 0) const { return pos_ + k < t_.size() ? &t_[pos_ + k] : nullptr; }
  bool at(TokenType type) const { return peek() && peek()->type == type; }
  bool at_op(const char* op) const { return at(TokenType::Operator) && peek()->value == op; }
  bool at_ident(const char* word, size_t k = 0) const {
    const Token* t = peek(k);
    return t && t->type == TokenType::Identifier && t->value == word;
  }
  bool at_statement(std::initializer_list<const char*> names) const {
    if (!at(TokenType::OpenStatement)) return false;
    const Token* t = peek(1);
    if (!t || t->type != TokenType::Identifier) return false;
    for (const char* n : names)
      if (t->value == n) return true;
    return false;
  }
  std::string describe(const Token* t) const {
    if (!t) return "the end of the template";
    switch (t->type) {
      case TokenType::Text: return "text";
      case TokenType::String: return "a string";
      case TokenType::Integer:
      case TokenType::Float: return "number " + t->value;
      case TokenType::Identifier: return "'" + t->value + "'";
      default: return "'" + t->value + "'";
    }
  }
  const Token& expect(TokenType type, const char* what) {
    if (!at(type)) fail(here(), std::string("expected ") + what + ", found " + describe(peek()));
    return t_[pos_++];
  }
  void expect_ident(const char* word) {
    if (!at_ident(word)) fail(here(), std::string("expected '") + word + "', found " + describe(peek()));
    ++pos_;
  }

  struct DepthGuard {
    Parser& p;
    DepthGuard(Parser& parser, SourceLoc loc) : p(parser) {
      if (++p.depth_ > kMaxNestingDepth)
        p.fail(loc, "template nests deeper than " + std::to_string(kMaxNestingDepth) + " levels");
    }
    ~DepthGuard() { --p.depth_; }
  };

  // ---- statements ----
  void parse_any(std::vector<NodePtr>& out) {
    const Token& tok = t_[pos_];
    switch (tok.type) {
      case TokenType::Text: {
        auto n = make(NodeKind::Text, tok.loc);
        n->name = tok.value;
        ++pos_;
        out.push_back(std::move(n));
        return;
      }
      case TokenType::Comment:
        ++pos_;
        return;
      case TokenType::OpenExpression: {
        ++pos_;
        auto n = make(NodeKind::Output, tok.loc);
        n->children.push_back(parse_expression());
        expect(TokenType::CloseExpression, "'}}'");
        out.push_back(std::move(n));
        return;
      }
      case TokenType::OpenStatement:
        out.push_back(parse_statement());
        return;
      default:
        fail(tok.loc, "unexpected " + describe(&tok) + " outside a tag");
    }
  }

  // Parses statements until one of `enders` opens; leaves pos_ at its "{%".
  void parse_body(std::vector<NodePtr>& out, std::initializer_list<const char*> enders, SourceLoc opened,
                  const char* block) {
    while (!at_statement(enders)) {
      if (pos_ >= t_.size()) fail(opened, std::string("'{% ") + block + " %}' is never closed");
      parse_any(out);
    }
  }
  void close_block(const char* end_word) {
    expect(TokenType::OpenStatement, "'{%'");
    expect_ident(end_word);
    expect(TokenType::CloseStatement, "'%}'");
  }

  NodePtr parse_statement() {
    ++pos_;  // {%
    if (!at(TokenType::Identifier)) fail(here(), "expected a statement name after '{%', found " + describe(peek()));
    const std::string word = peek()->value;
    SourceLoc loc = peek()->loc;
    DepthGuard guard(*this, loc);
    ++pos_;
    if (word == "set") return parse_set(loc);
    if (word == "if") {
      auto n = parse_if(loc);
      close_block("endif");
      return n;
    }
    if (word == "for") return parse_for(loc);
    if (word == "macro") return parse_macro(loc);
    if (word == "call") return parse_call_block(loc);
    if (word == "filter") return parse_filter_block(loc);
    if (word == "break" || word == "continue") {
      expect(TokenType::CloseStatement, "'%}'");
      if (loop_depth_ == 0) fail(loc, "'{% " + word + " %}' outside a for loop");
      return make(word == "break" ? NodeKind::Break : NodeKind::Continue, loc);
    }
    static const char* kUnsupported[] = {"include", "import", "from", "extends", "block", "raw", "with",
                                         "autoescape", "do", "trans", "pluralize"};
    for (const char* u : kUnsupported)
      if (word == u) fail(loc, "unsupported statement '{% " + word + " %}' (chat templates here are self-contained)");
    fail(loc, "unknown statement '{% " + word + " %}'");
  }

  NodePtr parse_if(SourceLoc loc) {
    auto n = make(NodeKind::If, loc);
    n->children.push_back(parse_expression());
    expect(TokenType::CloseStatement, "'%}'");
    parse_body(n->body, {"elif", "else", "endif"}, loc, "if");
    if (at_statement({"elif"})) {
      pos_ += 1;
      SourceLoc elif_loc = peek()->loc;
      pos_ += 1;
      DepthGuard guard(*this, elif_loc);
      n->else_body.push_back(parse_if(elif_loc));
    } else if (at_statement({"else"})) {
      pos_ += 2;
      expect(TokenType::CloseStatement, "'%}'");
      parse_body(n->else_body, {"endif"}, loc, "if");
    }
    return n;
  }

  std::vector<std::string> parse_targets(const char* what) {
    std::vector<std::string> names;
    bool paren = at(TokenType::OpenParen);
    if (paren) ++pos_;
    while (true) {
      if (!at(TokenType::Identifier) || is_keyword(peek()->value))
        fail(here(), std::string("expected a variable name in ") + what + ", found " + describe(peek()));
      names.push_back(t_[pos_++].value);
      if (!at(TokenType::Comma)) break;
      ++pos_;
    }
    if (paren) expect(TokenType::CloseParen, "')'");
    return names;
  }

  NodePtr parse_for(SourceLoc loc) {
    auto n = make(NodeKind::For, loc);
    n->names = parse_targets("a for loop");
    expect_ident("in");
    n->children.push_back(parse_or());
    if (at_ident("if")) {
      ++pos_;
      n->children.push_back(parse_or());
    } else {
      n->children.push_back(nullptr);
    }
    if (at_ident("recursive")) fail(here(), "unsupported construct: recursive for loops");
    expect(TokenType::CloseStatement, "'%}'");
    ++loop_depth_;
    parse_body(n->body, {"else", "endfor"}, loc, "for");
    --loop_depth_;
    if (at_statement({"else"})) {
      pos_ += 2;
      expect(TokenType::CloseStatement, "'%}'");
      parse_body(n->else_body, {"endfor"}, loc, "for");
    }
    close_block("endfor");
    return n;
  }

  NodePtr parse_set(SourceLoc loc) {
    // {% set ns.attr = v %}
    if (at(TokenType::Identifier) && peek(1) && peek(1)->type == TokenType::Dot) {
      auto n = make(NodeKind::SetAttr, loc);
      auto obj = make(NodeKind::Identifier, peek()->loc);
      obj->name = t_[pos_++].value;
      ++pos_;  // .
      if (!at(TokenType::Identifier)) fail(here(), "expected an attribute name after '.'");
      n->name = t_[pos_++].value;
      if (at(TokenType::Dot)) fail(here(), "unsupported construct: assignment to a nested attribute");
      expect(TokenType::Assign, "'='");
      n->children.push_back(std::move(obj));
      n->children.push_back(parse_expression_sequence());
      expect(TokenType::CloseStatement, "'%}'");
      return n;
    }
    std::vector<std::string> names = parse_targets("a set statement");
    if (at(TokenType::Assign)) {
      ++pos_;
      auto n = make(NodeKind::SetVar, loc);
      n->names = std::move(names);
      n->children.push_back(parse_expression_sequence());
      expect(TokenType::CloseStatement, "'%}'");
      return n;
    }
    if (names.size() != 1) fail(loc, "a block set takes exactly one variable");
    if (at(TokenType::Pipe)) fail(here(), "unsupported construct: filters on a block set");
    expect(TokenType::CloseStatement, "'=' or '%}'");
    auto n = make(NodeKind::SetBlock, loc);
    n->names = std::move(names);
    parse_body(n->body, {"endset"}, loc, "set");
    close_block("endset");
    return n;
  }

  void parse_parameters(Node& n) {
    expect(TokenType::OpenParen, "'('");
    while (!at(TokenType::CloseParen)) {
      if (!at(TokenType::Identifier) || is_keyword(peek()->value))
        fail(here(), "expected a parameter name, found " + describe(peek()));
      std::string name = t_[pos_++].value;
      for (const auto& existing : n.names)
        if (existing == name) fail(here(), "duplicate parameter '" + name + "'");
      NodePtr def;
      if (at(TokenType::Assign)) {
        ++pos_;
        def = parse_expression();
      } else if (!n.defaults.empty() && n.defaults.back()) {
        fail(here(), "parameter '" + name + "' without a default follows one with a default");
      }
      n.names.push_back(std::move(name));
      n.defaults.push_back(std::move(def));
      if (!at(TokenType::Comma)) break;
      ++pos_;
    }
    expect(TokenType::CloseParen, "')'");
  }

  NodePtr parse_macro(SourceLoc loc) {
    auto n = make(NodeKind::Macro, loc);
    if (!at(TokenType::Identifier)) fail(here(), "expected a macro name");
    n->name = t_[pos_++].value;
    parse_parameters(*n);
    expect(TokenType::CloseStatement, "'%}'");
    int saved = loop_depth_;
    loop_depth_ = 0;
    parse_body(n->body, {"endmacro"}, loc, "macro");
    loop_depth_ = saved;
    close_block("endmacro");
    note_special_names(*n);
    return n;
  }

  NodePtr parse_call_block(SourceLoc loc) {
    auto n = make(NodeKind::CallBlock, loc);
    if (at(TokenType::OpenParen)) parse_parameters(*n);
    SourceLoc call_loc = here();
    NodePtr callee = parse_postfix();
    if (callee->kind != NodeKind::Call) fail(call_loc, "expected a macro call after '{% call %}'");
    n->children.push_back(std::move(callee));
    expect(TokenType::CloseStatement, "'%}'");
    parse_body(n->body, {"endcall"}, loc, "call");
    close_block("endcall");
    note_special_names(*n);
    return n;
  }

  NodePtr parse_filter_block(SourceLoc loc) {
    auto n = make(NodeKind::FilterBlock, loc);
    n->children.push_back(parse_filter_tail(nullptr));
    while (at(TokenType::Pipe)) {
      ++pos_;
      n->children[0] = parse_filter_tail(std::move(n->children[0]));
    }
    expect(TokenType::CloseStatement, "'%}'");
    parse_body(n->body, {"endfilter"}, loc, "filter");
    close_block("endfilter");
    return n;
  }

  // ---- expressions ----
  NodePtr parse_expression_sequence() {
    SourceLoc loc = here();
    NodePtr first = parse_expression();
    if (!at(TokenType::Comma)) return first;
    auto tuple = make(NodeKind::Tuple, loc);
    tuple->children.push_back(std::move(first));
    while (at(TokenType::Comma)) {
      ++pos_;
      if (at(TokenType::CloseStatement) || at(TokenType::CloseParen)) break;
      tuple->children.push_back(parse_expression());
    }
    return tuple;
  }

  NodePtr parse_expression() {
    DepthGuard guard(*this, here());
    SourceLoc loc = here();
    NodePtr value = parse_or();
    if (!at_ident("if")) return value;
    ++pos_;
    NodePtr test = parse_or();
    if (at_ident("else")) {
      ++pos_;
      auto n = make(NodeKind::Ternary, loc);
      n->children.push_back(std::move(test));
      n->children.push_back(std::move(value));
      n->children.push_back(parse_expression());
      return n;
    }
    auto n = make(NodeKind::Select, loc);
    n->children.push_back(std::move(value));
    n->children.push_back(std::move(test));
    return n;
  }

  NodePtr parse_or() {
    NodePtr left = parse_and();
    while (at_ident("or")) {
      auto n = make(NodeKind::Or, t_[pos_++].loc);
      n->children.push_back(std::move(left));
      n->children.push_back(parse_and());
      left = std::move(n);
    }
    return left;
  }

  NodePtr parse_and() {
    NodePtr left = parse_not();
    while (at_ident("and")) {
      auto n = make(NodeKind::And, t_[pos_++].loc);
      n->children.push_back(std::move(left));
      n->children.push_back(parse_not());
      left = std::move(n);
    }
    return left;
  }

  NodePtr parse_not() {
    if (at_ident("not")) {
      DepthGuard guard(*this, here());
      auto n = make(NodeKind::Not, t_[pos_++].loc);
      n->children.push_back(parse_not());
      return n;
    }
    return parse_compare();
  }

  NodePtr parse_compare() {
    SourceLoc loc = here();
    NodePtr first = parse_concat();
    NodePtr chain;
    while (true) {
      std::string op;
      if (at_ident("not") && at_ident("in", 1)) {
        op = "not in";
        pos_ += 2;
      } else if (at_ident("in")) {
        op = "in";
        ++pos_;
      } else if (at(TokenType::Operator) && (peek()->value == "==" || peek()->value == "!=" || peek()->value == "<" ||
                                             peek()->value == ">" || peek()->value == "<=" || peek()->value == ">=")) {
        op = t_[pos_++].value;
      } else {
        break;
      }
      if (!chain) {
        chain = make(NodeKind::Compare, loc);
        chain->children.push_back(std::move(first));
      }
      chain->ops.push_back(op);
      chain->children.push_back(parse_concat());
    }
    return chain ? std::move(chain) : std::move(first);
  }

  NodePtr parse_concat() {
    NodePtr left = parse_additive();
    while (at_op("~")) {
      auto n = make(NodeKind::Binary, t_[pos_].loc);
      n->name = t_[pos_++].value;
      n->children.push_back(std::move(left));
      n->children.push_back(parse_additive());
      left = std::move(n);
    }
    return left;
  }

  NodePtr parse_additive() {
    NodePtr left = parse_multiplicative();
    while (at_op("+") || at_op("-")) {
      auto n = make(NodeKind::Binary, t_[pos_].loc);
      n->name = t_[pos_++].value;
      n->children.push_back(std::move(left));
      n->children.push_back(parse_multiplicative());
      left = std::move(n);
    }
    return left;
  }

  NodePtr parse_multiplicative() {
    NodePtr left = parse_power();
    while (at_op("*") || at_op("/") || at_op("//") || at_op("%")) {
      auto n = make(NodeKind::Binary, t_[pos_].loc);
      n->name = t_[pos_++].value;
      n->children.push_back(std::move(left));
      n->children.push_back(parse_power());
      left = std::move(n);
    }
    return left;
  }

  NodePtr parse_power() {
    NodePtr left = parse_unary();
    while (at_op("**")) {
      auto n = make(NodeKind::Binary, t_[pos_].loc);
      n->name = t_[pos_++].value;
      n->children.push_back(std::move(left));
      n->children.push_back(parse_unary());
      left = std::move(n);
    }
    return left;
  }

  // Unary sign, then postfix, then filters and tests left to right.
  NodePtr parse_unary() {
    NodePtr operand;
    if (at_op("-") || at_op("+")) {
      DepthGuard guard(*this, here());
      auto n = make(NodeKind::Unary, t_[pos_].loc);
      n->name = t_[pos_++].value;
      n->children.push_back(parse_unary_sign_only());
      operand = std::move(n);
    } else {
      operand = parse_postfix();
    }
    while (true) {
      if (at(TokenType::Pipe)) {
        ++pos_;
        operand = parse_filter_tail(std::move(operand));
      } else if (at_ident("is")) {
        operand = parse_test_tail(std::move(operand));
      } else {
        break;
      }
    }
    return operand;
  }
  NodePtr parse_unary_sign_only() {
    if (at_op("-") || at_op("+")) {
      DepthGuard guard(*this, here());
      auto n = make(NodeKind::Unary, t_[pos_].loc);
      n->name = t_[pos_++].value;
      n->children.push_back(parse_unary_sign_only());
      return n;
    }
    return parse_postfix();
  }

  void parse_call_args(Node& n) {
    expect(TokenType::OpenParen, "'('");
    while (!at(TokenType::CloseParen)) {
      if (at_op("*") || at_op("**")) fail(here(), "unsupported construct: argument unpacking with * or **");
      if (at(TokenType::Identifier) && peek(1) && peek(1)->type == TokenType::Assign) {
        std::string key = t_[pos_].value;
        pos_ += 2;
        for (const auto& kv : n.kwargs)
          if (kv.first == key) fail(here(), "keyword argument '" + key + "' given twice");
        n.kwargs.emplace_back(key, parse_expression());
      } else {
        if (!n.kwargs.empty()) fail(here(), "positional argument after a keyword argument");
        n.children.push_back(parse_expression());
      }
      if (!at(TokenType::Comma)) break;
      ++pos_;
    }
    expect(TokenType::CloseParen, "')'");
  }

  NodePtr parse_filter_tail(NodePtr operand) {
    if (!at(TokenType::Identifier)) fail(here(), "expected a filter name after '|', found " + describe(peek()));
    const Token& name = t_[pos_++];
    std::string full = name.value;
    while (at(TokenType::Dot) && peek(1) && peek(1)->type == TokenType::Identifier) {
      full += "." + peek(1)->value;
      pos_ += 2;
    }
    if (!is_known_filter(full)) fail(name.loc, "unsupported filter '" + full + "'");
    auto n = make(NodeKind::Filter, name.loc);
    n->name = full;
    n->children.push_back(std::move(operand));
    if (at(TokenType::OpenParen)) parse_call_args(*n);
    return n;
  }

  NodePtr parse_test_tail(NodePtr operand) {
    ++pos_;  // is
    bool negate = false;
    if (at_ident("not")) {
      negate = true;
      ++pos_;
    }
    if (!at(TokenType::Identifier)) fail(here(), "expected a test name after 'is', found " + describe(peek()));
    const Token& name = t_[pos_++];
    if (!is_known_test(name.value)) fail(name.loc, "unsupported test '" + name.value + "'");
    auto n = make(NodeKind::Test, name.loc);
    n->name = name.value;
    n->negate = negate;
    n->children.push_back(std::move(operand));
    if (at(TokenType::OpenParen)) {
      parse_call_args(*n);
    } else if (const Token* t = peek();
               t && (t->type == TokenType::String || t->type == TokenType::Integer || t->type == TokenType::Float ||
                     (t->type == TokenType::Identifier && !is_keyword(t->value)) ||
                     t->type == TokenType::OpenBracket || t->type == TokenType::OpenBrace)) {
      // `x is divisibleby 3`, `x is sameas none`: one argument without parentheses.
      n->children.push_back(parse_postfix());
    }
    return n;
  }

  NodePtr parse_postfix() {
    NodePtr node = parse_primary();
    while (true) {
      if (at(TokenType::Dot)) {
        ++pos_;
        if (at(TokenType::Identifier)) {
          auto n = make(NodeKind::Attr, t_[pos_].loc);
          n->name = t_[pos_++].value;
          n->children.push_back(std::move(node));
          node = std::move(n);
        } else if (at(TokenType::Integer)) {
          auto n = make(NodeKind::Index, t_[pos_].loc);
          auto key = make(NodeKind::Literal, t_[pos_].loc);
          key->literal = Value::integer(std::strtoll(t_[pos_].value.c_str(), nullptr, 10));
          ++pos_;
          n->children.push_back(std::move(node));
          n->children.push_back(std::move(key));
          node = std::move(n);
        } else {
          fail(here(), "expected an attribute name after '.', found " + describe(peek()));
        }
      } else if (at(TokenType::OpenBracket)) {
        SourceLoc loc = t_[pos_++].loc;
        node = parse_subscript(std::move(node), loc);
      } else if (at(TokenType::OpenParen)) {
        auto n = make(NodeKind::Call, here());
        n->children.push_back(std::move(node));
        parse_call_args(*n);
        node = std::move(n);
      } else {
        return node;
      }
    }
  }

  NodePtr parse_subscript(NodePtr object, SourceLoc loc) {
    NodePtr parts[3];
    int count = 0;
    bool is_slice = false;
    while (!at(TokenType::CloseBracket)) {
      if (count >= 3) fail(here(), "a slice takes at most three parts");
      if (at(TokenType::Colon)) {
        ++pos_;
        ++count;
        is_slice = true;
        continue;
      }
      parts[count] = parse_expression();
      if (at(TokenType::Colon)) {
        ++pos_;
        ++count;
        is_slice = true;
      } else if (!at(TokenType::CloseBracket)) {
        fail(here(), "expected ']' or ':', found " + describe(peek()));
      } else {
        ++count;
      }
    }
    ++pos_;  // ]
    if (!is_slice) {
      if (!parts[0]) fail(loc, "empty subscript '[]'");
      auto n = make(NodeKind::Index, loc);
      n->children.push_back(std::move(object));
      n->children.push_back(std::move(parts[0]));
      return n;
    }
    auto n = make(NodeKind::Slice, loc);
    n->children.push_back(std::move(object));
    for (auto& p : parts) n->children.push_back(std::move(p));
    return n;
  }

  NodePtr parse_primary() {
    DepthGuard guard(*this, here());
    const Token* t = peek();
    if (!t) fail(here(), "expected an expression, found the end of the template");
    SourceLoc loc = t->loc;
    switch (t->type) {
      case TokenType::Integer: {
        ++pos_;
        auto n = make(NodeKind::Literal, loc);
        int64_t v = 0;
        auto res = std::from_chars(t->value.data(), t->value.data() + t->value.size(), v);
        if (res.ec != std::errc()) {
          n->literal = Value::floating(std::strtod(t->value.c_str(), nullptr));
        } else {
          n->literal = Value::integer(v);
        }
        return n;
      }
      case TokenType::Float: {
        ++pos_;
        auto n = make(NodeKind::Literal, loc);
        n->literal = Value::floating(std::strtod(t->value.c_str(), nullptr));
        return n;
      }
      case TokenType::String: {
        std::string s = t->value;
        ++pos_;
        while (at(TokenType::String)) s += t_[pos_++].value;  // adjacent literals concatenate
        auto n = make(NodeKind::Literal, loc);
        n->literal = Value::string(std::move(s));
        return n;
      }
      case TokenType::Identifier: {
        ++pos_;
        const std::string& w = t->value;
        auto n = make(NodeKind::Literal, loc);
        if (w == "true" || w == "True") {
          n->literal = Value::boolean(true);
        } else if (w == "false" || w == "False") {
          n->literal = Value::boolean(false);
        } else if (w == "none" || w == "None") {
          n->literal = Value::none();
        } else {
          if (is_keyword(w)) fail(loc, "unexpected keyword '" + w + "'");
          n->kind = NodeKind::Identifier;
          n->name = w;
        }
        return n;
      }
      case TokenType::OpenParen: {
        ++pos_;
        if (at(TokenType::CloseParen)) {
          ++pos_;
          return make(NodeKind::Tuple, loc);
        }
        NodePtr inner = parse_expression_sequence();
        expect(TokenType::CloseParen, "')'");
        return inner;
      }
      case TokenType::OpenBracket: {
        ++pos_;
        auto n = make(NodeKind::List, loc);
        while (!at(TokenType::CloseBracket)) {
          n->children.push_back(parse_expression());
          if (!at(TokenType::Comma)) break;
          ++pos_;
        }
        expect(TokenType::CloseBracket, "']'");
        return n;
      }
      case TokenType::OpenBrace: {
        ++pos_;
        auto n = make(NodeKind::Dict, loc);
        while (!at(TokenType::CloseBrace)) {
          n->children.push_back(parse_expression());
          expect(TokenType::Colon, "':' in a dict literal");
          n->children.push_back(parse_expression());
          if (!at(TokenType::Comma)) break;
          ++pos_;
        }
        expect(TokenType::CloseBrace, "'}'");
        return n;
      }
      default:
        fail(loc, "expected an expression, found " + describe(t));
    }
  }

  std::vector<Token> t_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

Program parse(const std::string& source) { return Parser(tokenize(source)).run(); }

}  // namespace tandem::jinja
