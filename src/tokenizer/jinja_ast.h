// Syntax tree of a chat template. One node type keeps the tree simple; the
// comment on each kind says which fields it uses.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja_value.h"

namespace tandem::jinja {

struct Node;
using NodePtr = std::unique_ptr<Node>;

enum class NodeKind {
  // Statements.
  Text,         // name = the text
  Output,       // {{ children[0] }}
  If,           // children[0] = test; body; else_body (an elif is a nested If)
  For,          // names = targets; children[0] = iterable; children[1] = filter test or null; body; else_body
  SetVar,       // names = targets (several: tuple unpacking); children[0] = value
  SetAttr,      // children[0] = namespace expression; name = attribute; children[1] = value
  SetBlock,     // names[0] = target; body
  Macro,        // name; names = parameters; defaults (parallel to names, null = required); body;
                // ops = the special names ("varargs", "kwargs") the body reads
  CallBlock,    // children[0] = Call expression; names/defaults = caller parameters; body; ops as Macro
  FilterBlock,  // children[0] = Filter expression whose operand is null; body
  Break,
  Continue,
  // Expressions.
  Literal,     // literal
  Identifier,  // name
  List,        // children = items
  Tuple,       // children = items
  Dict,        // children = key0, value0, key1, value1, ...
  Attr,        // children[0] = object; name = attribute
  Index,       // children[0] = object; children[1] = key
  Slice,       // children[0] = object; children[1..3] = start, stop, step (each may be null)
  Call,        // children[0] = callee; children[1..] = positional args; kwargs
  Filter,      // children[0] = operand; name; children[1..] = args; kwargs
  Test,        // children[0] = operand; name; negate; children[1..] = args
  Unary,       // name = "-" or "+"; children[0]
  Not,         // children[0]
  Binary,      // name = + - * / // % ** ~; children[0], children[1]
  Compare,     // children = operands; ops = operators (== != < > <= >= in "not in"), a chain
  And,         // children[0], children[1]
  Or,          // children[0], children[1]
  Ternary,     // children = test, if_true, if_false
  Select,      // children = value, test: value if test, else undefined
};

struct Node {
  NodeKind kind;
  SourceLoc loc;
  std::string name;
  Value literal;
  bool negate = false;
  std::vector<NodePtr> children;
  std::vector<std::pair<std::string, NodePtr>> kwargs;
  std::vector<std::string> names;
  std::vector<NodePtr> defaults;
  std::vector<std::string> ops;
  std::vector<NodePtr> body;
  std::vector<NodePtr> else_body;
};

struct Program {
  std::vector<NodePtr> body;
};

}  // namespace tandem::jinja
