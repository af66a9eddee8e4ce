// Parser of the chat template language: tokens to a Program. Grammar and
// operator precedence follow Jinja; unsupported statements, filters and tests
// are rejected here, with their line:column, so that a template either renders
// as written or fails at load time.
#pragma once

#include <string>

#include "tokenizer/jinja_ast.h"

namespace tandem::jinja {

// Throws tandem::Error on a syntax error or an unsupported construct.
Program parse(const std::string& source);

// Nesting deeper than this (parentheses, blocks) is an error, so that a
// hostile template cannot overflow the stack of the parser or the renderer.
constexpr int kMaxNestingDepth = 128;

}  // namespace tandem::jinja
