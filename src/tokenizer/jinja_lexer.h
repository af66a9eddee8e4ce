// Lexer of the chat template language. It first applies the block
// whitespace rules templates are written for (trim_blocks, lstrip_blocks, a
// dropped final newline), exactly as the reference renderer does, then splits
// the text into tokens that carry their line:column in the original source.
#pragma once

#include <string>
#include <vector>

#include "tokenizer/jinja_value.h"

namespace tandem::jinja {

enum class TokenType {
  Text,
  Comment,
  OpenStatement,    // {%
  CloseStatement,   // %}
  OpenExpression,   // {{
  CloseExpression,  // }}
  Identifier,
  Integer,
  Float,
  String,
  OpenParen,
  CloseParen,
  OpenBracket,
  CloseBracket,
  OpenBrace,
  CloseBrace,
  Comma,
  Dot,
  Colon,
  Pipe,
  Assign,    // =
  Operator,  // + - ~ * / // % ** == != < > <= >=
};

struct Token {
  TokenType type;
  std::string value;  // text, identifier, decoded string literal, number, operator
  SourceLoc loc;
};

// Throws tandem::Error ("chat template line L:C: ...") on a lexical error.
std::vector<Token> tokenize(const std::string& source);

std::string format_loc(SourceLoc loc);

}  // namespace tandem::jinja
