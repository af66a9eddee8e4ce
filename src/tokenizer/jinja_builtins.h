// Built-in filters, tests, methods and global functions of the chat template
// language. The names are checked at parse time; the implementations run
// inside the Interpreter.
#pragma once

#include <string>

#include "tokenizer/jinja_value.h"

namespace tandem::jinja {

bool is_known_filter(const std::string& name);
bool is_known_test(const std::string& name);

// Applies filter `name` to `operand`. `interp` runs nested filters/tests
// (map, select) and enforces the size limits.
Value apply_filter(Interpreter& interp, const std::string& name, const Value& operand, const CallArgs& args,
                   SourceLoc loc);
bool apply_test(Interpreter& interp, const std::string& name, const Value& operand, const CallArgs& args,
                SourceLoc loc);

// `obj.name` for a method of a string or a dict (e.g. "a b".split, d.items):
// a bound callable, or undefined if there is no such method.
Value lookup_method(const Value& obj, const std::string& name);

}  // namespace tandem::jinja

namespace tandem::jinja {
// Adds the global functions (range, namespace, dict, raise_exception,
// strftime_now) to a scope's variables.
void install_globals(Object& globals);
}  // namespace tandem::jinja
