// Unit tests of the chat template language: statements, expressions,
// filters, tests, methods, whitespace rules, errors and limits.
#include <gtest/gtest.h>

#include <chrono>
#include <ctime>

#include "common/error.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/jinja_interpreter.h"
#include "tokenizer/jinja_parser.h"

namespace {

using tandem::jinja::Interpreter;
using tandem::jinja::Object;
using tandem::jinja::RenderOptions;
using tandem::jinja::Value;

// 2026-11-25 12:34:56 UTC.
std::chrono::system_clock::time_point pinned_time() {
  return std::chrono::system_clock::time_point(std::chrono::seconds(1795610096));
}

std::string render(const std::string& source, const nlohmann::ordered_json& vars = nlohmann::ordered_json::object(),
                   RenderOptions options = {}) {
  tandem::jinja::Program program = tandem::jinja::parse(source);
  if (!options.now) options.now = pinned_time;
  Interpreter interp(program, options);
  Object obj;
  for (auto it = vars.begin(); it != vars.end(); ++it) obj.set(it.key(), Value::from_json(it.value()));
  return interp.render(obj);
}

// The message of the tandem::Error that rendering throws ("" if none).
std::string error_of(const std::string& source, const nlohmann::ordered_json& vars = nlohmann::ordered_json::object(),
                     RenderOptions options = {}) {
  try {
    render(source, vars, options);
  } catch (const tandem::Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_RENDERS(src, expected) EXPECT_EQ(render(src), expected) << "template: " << (src)
#define EXPECT_ERROR_CONTAINS(src, needle) \
  EXPECT_NE(error_of(src).find(needle), std::string::npos) << "template: " << (src) << "\nerror: " << error_of(src)

TEST(ChatTemplateLanguage, PrintsValuesLikeTheReference) {
  EXPECT_RENDERS("{{ 42 }}|{{ -7 }}|{{ 1.0 }}|{{ 2.50 }}|{{ 0.1 + 0.2 }}", "42|-7|1.0|2.5|0.30000000000000004");
  EXPECT_RENDERS("{{ true }}|{{ false }}|{{ none }}|{{ nothing }}|", "true|false|||");
  EXPECT_RENDERS("{{ [1, 'a', none] }}|{{ {'k': [true]} }}", "[1, \"a\", null]|{\"k\": [true]}");
  EXPECT_RENDERS("{{ 10.0 ** 21 }}|{{ 10.0 ** 20 }}|{{ 1 / 3 }}", "1e+21|100000000000000000000.0|0.3333333333333333");
}

TEST(ChatTemplateLanguage, IntegerAndFloatArithmetic) {
  EXPECT_RENDERS("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 6 / 2 }}", "3 -4 1 2 3.5 3.0");
  EXPECT_RENDERS("{{ 2 ** 10 }} {{ 2 ** -1 }} {{ 2.0 * 3 }} {{ 1 + true }}", "1024 0.5 6.0 2");
  EXPECT_RENDERS("{{ 'ab' * 3 }}{{ 'x' + 1 }}{{ 'y' ~ 2.0 ~ false }}", "abababx1y2false");
  EXPECT_RENDERS("{{ [1] + [2, 3] }}", "[1, 2, 3]");
  EXPECT_ERROR_CONTAINS("{{ 9223372036854775807 + 1 }}", "integer overflow");
  EXPECT_ERROR_CONTAINS("{{ 1 / 0 }}", "division by zero");
  EXPECT_ERROR_CONTAINS("{{ 1 % 0 }}", "modulo by zero");
  EXPECT_ERROR_CONTAINS("{{ 'a' - 1 }}", "unsupported operand types for '-': string and integer");
  EXPECT_ERROR_CONTAINS("{{ nothing + 1 }}", "undefined");
  EXPECT_ERROR_CONTAINS("{{ '%s' % 1 }}", "string formatting");
}

TEST(ChatTemplateLanguage, StringLiteralsAndEscapes) {
  EXPECT_RENDERS("{{ 'a\\nb' }}|{{ \"t\\tq\\\"\" }}|{{ '\\x41\\u00e9' }}|{{ 'ab' 'cd' }}", "a\nb|t\tq\"|A\xC3\xA9|abcd");
  EXPECT_RENDERS("{{ 'one \\\ntwo' }}", "one two");  // backslash-newline continues the literal
  EXPECT_ERROR_CONTAINS("{{ '\\q' }}", "unsupported escape");
  EXPECT_ERROR_CONTAINS("{{ 'open }}", "never closed");
}

TEST(ChatTemplateLanguage, WhitespaceControl) {
  EXPECT_RENDERS("a  {{- 'b' -}}  c", "abc");
  EXPECT_RENDERS("x \n {%- if true -%} \n y \n {%- endif -%} \n z", "xyz");
  // trim_blocks: the newline after a block tag goes; lstrip_blocks: indentation before one goes.
  EXPECT_RENDERS("{% if true %}\n    yes\n{% endif %}\nend", "    yes\nend");
  EXPECT_RENDERS("  {% if true %}x{% endif %}", "x");
  EXPECT_RENDERS("  {{ 'kept' }}", "  kept");
  EXPECT_RENDERS("{# comment #}\nafter", "after");
  EXPECT_RENDERS("a {#- gone -#} b", "ab");
  EXPECT_RENDERS("last line\n", "last line");  // one final newline is dropped
  EXPECT_RENDERS("two\n\n", "two\n");
  EXPECT_RENDERS("a{% generation %}b{% endgeneration %}c", "abc");
}

TEST(ChatTemplateLanguage, IfElifElse) {
  const char* t = "{% for x in [1, 2, 3, 4] %}{% if x == 1 %}one{% elif x is even and x > 2 %}big-even"
                  "{% elif x is even %}even{% else %}other{% endif %};{% endfor %}";
  EXPECT_RENDERS(t, "one;even;other;big-even;");
  EXPECT_RENDERS("{{ 'y' if 1 < 2 < 3 else 'n' }}{{ 'y' if 3 > 2 > 2 else 'n' }}", "yn");
  EXPECT_RENDERS("{{ 'a' if false }}|{{ 'b' if not false }}", "|b");
}

TEST(ChatTemplateLanguage, LoopVariables) {
  EXPECT_RENDERS("{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}"
                 "{{ loop.first }}{{ loop.last }}{{ loop.length }} {% endfor %}",
                 "1032truefalse3 2121falsefalse3 3210falsetrue3 ");
  EXPECT_RENDERS("{% for x in [1, 2, 3] %}{{ loop.previtem | default('-') }}{{ loop.nextitem | default('-') }} {% endfor %}",
                 "-2 13 2- ");
  EXPECT_RENDERS("{% for x in range(10) if x is odd %}{{ x }}{{ ',' if not loop.last }}{% endfor %}", "1,3,5,7,9");
  EXPECT_RENDERS("{% for x in [] %}x{% else %}empty{% endfor %}", "empty");
  EXPECT_RENDERS("{% for x in range(9) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}"
                 "{{ x }}{% endfor %}",
                 "0134");
  EXPECT_RENDERS("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}", "a=1;b=2;");
  EXPECT_RENDERS("{% for k in {'z': 1, 'a': 2} %}{{ k }}{% endfor %}", "za");
  EXPECT_RENDERS("{% for x in undefined_list %}x{% else %}none{% endfor %}", "none");
  EXPECT_ERROR_CONTAINS("{% for x in 5 %}{% endfor %}", "cannot loop over a value of type integer");
  EXPECT_ERROR_CONTAINS("{% break %}", "outside a for loop");
}

TEST(ChatTemplateLanguage, SetScopingAndNamespaces) {
  EXPECT_RENDERS("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}", "21");
  EXPECT_RENDERS("{% set ns = namespace(n=0, s='') %}{% for i in range(4) %}{% set ns.n = ns.n + i %}"
                 "{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }}",
                 "6 0123");
  EXPECT_RENDERS("{% set a, b = [1, 2] %}{{ b }}{{ a }}", "21");
  EXPECT_RENDERS("{% set block %}in {{ 'side' }}{% endset %}[{{ block }}]", "[in side]");
  EXPECT_RENDERS("{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a + ns.b }}", "3");
  EXPECT_RENDERS("{% set d = dict(x=1, y='two') %}{{ d.y }}{{ d['x'] }}", "two1");
  EXPECT_ERROR_CONTAINS("{% set d = {'a': 1} %}{% set d.a = 2 %}", "only a namespace() can be assigned to");
  EXPECT_ERROR_CONTAINS("{% set a, b = [1] %}", "cannot unpack");
}

TEST(ChatTemplateLanguage, MacrosAndCallBlocks) {
  EXPECT_RENDERS("{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}"
                 "{{ greet('Ann') }} {{ greet('Bob', greeting='Hi') }} {{ greet(greeting='Yo', name='Cy') }}",
                 "Hello, Ann! Hi, Bob! Yo, Cy!");
  EXPECT_RENDERS("{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}"
                 "{% call wrap('b') %}bold {{ 1 + 1 }}{% endcall %}",
                 "<b>bold 2</b>");
  EXPECT_RENDERS("{% macro fact(n) %}{{ 1 if n <= 1 else n * (fact(n - 1) | int) }}{% endmacro %}{{ fact(5) }}", "120");
  EXPECT_ERROR_CONTAINS("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "macro calls nest deeper than");
  EXPECT_RENDERS("{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, k='v') }}",
                 "1[2, 3]{\"k\": \"v\"}");
  EXPECT_ERROR_CONTAINS("{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }}", "takes at most 1 argument(s), got 2");
  EXPECT_ERROR_CONTAINS("{% macro m(a) %}{{ a }}{% endmacro %}{{ m(b=1) }}", "has no parameter 'b'");
  EXPECT_RENDERS("{% macro m(a, b) %}[{{ a }}|{{ b is defined }}]{% endmacro %}{{ m(1) }}", "[1|false]");
}

TEST(ChatTemplateLanguage, StringFilters) {
  EXPECT_RENDERS("{{ '  hi  ' | trim }}|{{ 'xxhixx' | trim('x') }}|{{ 'hello world' | title }}|{{ 'hELLO' | capitalize }}",
                 "hi|hi|Hello World|Hello");
  EXPECT_RENDERS("{{ 'Straße ÄÖ' | upper }}|{{ 'ÀB Ω' | lower }}", "STRAßE ÄÖ|àb ω");
  EXPECT_RENDERS("{{ 'a-b-c' | replace('-', '+') }}|{{ 'aaa' | replace('a', 'b', 2) }}|{{ 'ab' | replace('', '.') }}",
                 "a+b+c|bba|.a.b.");
  EXPECT_RENDERS("{{ 'l1\\nl2\\n\\nl3' | indent(2) }}|{{ 'x\\ny' | indent('> ', first=true) }}", "l1\n  l2\n\n  l3|> x\n> y");
  EXPECT_RENDERS("{{ 'héllo' | length }}|{{ 'héllo' | first }}{{ 'héllo' | last }}|{{ 'abc' | reverse }}", "5|ho|cba");
  EXPECT_RENDERS("{{ '<a href=\"x\">&</a>' | e }}|{{ '<b>' | escape }}|{{ '<i>' | safe }}",
                 "&lt;a href=&#34;x&#34;&gt;&amp;&lt;/a&gt;|&lt;b&gt;|<i>");
  EXPECT_RENDERS("{{ 'ab' | center(6) }}|{{ 'one two  three' | wordcount }}", "  ab  |3");
  EXPECT_RENDERS("{{ 42 | string }}{{ none | string }}{{ [1] | string }}", "42None[1]");
}

TEST(ChatTemplateLanguage, NumberFilters) {
  EXPECT_RENDERS("{{ '42' | int }} {{ '3.9' | int }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }} {{ true | int }}",
                 "42 3 0 7 3 1");
  EXPECT_RENDERS("{{ '2.5' | float }} {{ 3 | float }} {{ 'bad' | float }}", "2.5 3.0 0.0");
  EXPECT_RENDERS("{{ -3 | abs }} {{ -2.5 | abs }} {{ 2.567 | round(2) }} {{ 2.5 | round }} {{ 2.1 | round(0, 'ceil') }}",
                 "3 2.5 2.57 3.0 3.0");
  EXPECT_RENDERS("{{ [1, 2, 3.5] | sum }} {{ [{'n': 2}, {'n': 5}] | sum(attribute='n') }}", "6.5 7");
}

TEST(ChatTemplateLanguage, ListAndDictFilters) {
  EXPECT_RENDERS("{{ [3, 1, 2] | sort }}{{ ['b', 'A', 'c'] | sort(reverse=true) }}{{ [3, 1] | max }}{{ [3, 1] | min }}",
                 "[1, 2, 3][\"c\", \"b\", \"A\"]31");
  EXPECT_RENDERS("{{ {'b': 2, 'a': 3}.items() | sort }}{{ [[1, 'b'], [1, 'a'], [0, 'z']] | sort }}",
                 "[[\"a\", 3], [\"b\", 2]][[0, \"z\"], [1, \"a\"], [1, \"b\"]]");
  EXPECT_ERROR_CONTAINS("{{ [1, 'a'] | sort }}", "cannot order");
  EXPECT_RENDERS("{{ [1, 2] | first }}{{ [1, 2] | last }}{{ [1, 2] | length }}{{ [1, 2] | count }}{{ [] | first }}|",
                 "1222|");
  EXPECT_RENDERS("{{ ['a', 'b'] | join(', ') }}|{{ [1, 2] | join }}|{{ [{'n': 'x'}, {'n': 'y'}] | join('+', attribute='n') }}",
                 "a, b|12|x+y");
  EXPECT_RENDERS("{{ ['a', 'A', 'b', 'a'] | unique | list }}{{ [1, 2] | reverse | list }}{{ 'ab' | list }}",
                 "[\"a\", \"b\"][2, 1][\"a\", \"b\"]");
  EXPECT_RENDERS("{{ {'b': 1, 'a': 2} | dictsort }}{{ {'b': 1, 'a': 2} | dictsort(by='value', reverse=true) }}",
                 "[[\"a\", 2], [\"b\", 1]][[\"a\", 2], [\"b\", 1]]");
  EXPECT_RENDERS("{{ {'k': 1} | items | list }}{{ none_here | items | list }}", "[[\"k\", 1]][]");
  const char* people = "{% set ps = [{'n': 'a', 'r': 'u', 'x': {'y': 1}}, {'n': 'b', 'r': 's'}, {'n': 'c', 'r': 'u'}] %}";
  EXPECT_RENDERS(std::string(people) + "{{ ps | selectattr('r', 'equalto', 'u') | map(attribute='n') | join }}", "ac");
  EXPECT_RENDERS(std::string(people) + "{{ ps | rejectattr('r', 'eq', 'u') | map(attribute='n') | list }}", "[\"b\"]");
  EXPECT_RENDERS(std::string(people) + "{{ ps | selectattr('x') | map(attribute='x.y') | list }}", "[1]");
  EXPECT_RENDERS(std::string(people) + "{{ ps | map(attribute='x.y', default=0) | list }}", "[1, 0, 0]");
  EXPECT_RENDERS("{{ [1, 2, 3, 4] | select('odd') | list }}{{ [1, 2, 3, 4] | reject('divisibleby', 2) | list }}"
                 "{{ ['a', 'B'] | map('upper') | list }}{{ [0, 1, none, 'x'] | select | list }}",
                 "[1, 3][1, 3][\"A\", \"B\"][1, \"x\"]");
  EXPECT_RENDERS("{{ missing | default('d') }}{{ none | default('d') }}{{ '' | default('d', true) }}{{ 0 | d(5) }}", "dd0");
}

TEST(ChatTemplateLanguage, ToJsonMatchesReferenceFormatting) {
  EXPECT_RENDERS("{{ {'b': [1, 2.5, none, true], 'a': 'x\"\\n\\u00e9'} | tojson }}",
                 "{\"b\": [1, 2.5, null, true], \"a\": \"x\\\"\\n\xC3\xA9\"}");
  EXPECT_RENDERS("{{ {'a': [1, {}], 'e': []} | tojson(indent=2) }}", "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"e\": []\n}");
  EXPECT_RENDERS("{{ {'b': 1, 'a': 'é'} | tojson(sort_keys=true, ensure_ascii=true) }}", "{\"a\": \"\\u00e9\", \"b\": 1}");
  EXPECT_RENDERS("{{ [1, {'a': 2}] | tojson(separators=(',', ':')) }}", "[1,{\"a\":2}]");
  EXPECT_RENDERS("{{ '\\x01' | tojson }}{{ 1.0 | tojson }}{{ 0.000001 | tojson }}{{ 0.0000001 | tojson }}",
                 "\"\\u0001\"10.0000011e-7");
  EXPECT_EQ(render("{{ x | tojson }}", {{"x", nlohmann::ordered_json::parse(R"({"z":1,"a":[1.5,"\ud83c\udf89"]})")}}),
            "{\"z\": 1, \"a\": [1.5, \"\xF0\x9F\x8E\x89\"]}");
}

TEST(ChatTemplateLanguage, Tests) {
  EXPECT_RENDERS("{{ x is defined }}{{ x is undefined }}{{ none is none }}{{ 1 is none }}", "falsetruetruefalse");
  EXPECT_RENDERS("{{ 'a' is string }}{{ 1 is number }}{{ 1.5 is integer }}{{ 1.5 is float }}{{ true is boolean }}",
                 "truetruefalsetruetrue");
  EXPECT_RENDERS("{{ {} is mapping }}{{ [] is iterable }}{{ 'a' is sequence }}{{ 1 is iterable }}", "truetruetruefalse");
  EXPECT_RENDERS("{{ true is true }}{{ 1 is true }}{{ false is false }}{{ range is callable }}", "truefalsetruetrue");
  EXPECT_RENDERS("{{ 3 is odd }}{{ 3 is even }}{{ 9 is divisibleby 3 }}{{ 9 is divisibleby(4) }}", "truefalsetruefalse");
  EXPECT_RENDERS("{{ 2 is equalto 2 }}{{ 2 is eq(3) }}{{ 2 is ne 3 }}{{ 2 is lt 3 }}{{ 2 is ge 3 }}", "truefalsetruetruefalse");
  EXPECT_RENDERS("{{ 'b' is in 'abc' }}{{ 2 is in [1, 2] }}{{ 'abc' is lower }}{{ 'aBc' is upper }}", "truetruetruefalse");
  EXPECT_RENDERS("{{ 1 is not none }}{{ x is not defined }}{{ not 1 is none }}", "truetruetrue");
}

TEST(ChatTemplateLanguage, StringAndDictMethods) {
  EXPECT_RENDERS("{{ 'a,b,,c'.split(',') }}{{ ' a  b '.split() }}{{ 'a,b,c'.split(',', 1) }}{{ 'a,b,c'.rsplit(',', 1) }}",
                 "[\"a\", \"b\", \"\", \"c\"][\"a\", \"b\"][\"a\", \"b,c\"][\"a,b\", \"c\"]");
  EXPECT_RENDERS("{{ '\\n x \\n'.strip() }}|{{ '\\n x \\n'.strip('\\n') }}|{{ 'xxa'.lstrip('x') }}|{{ 'axx'.rstrip('x') }}",
                 "x| x |a|a");
  EXPECT_RENDERS("{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}{{ 'aXa'.upper() }}{{ 'aXa'.lower() }}",
                 "truetrueAXAaxa");
  EXPECT_RENDERS("{{ 'hi there'.title() }}{{ 'a-a'.replace('-', '_') }}{{ 'abcb'.find('b') }}{{ 'abcb'.count('b') }}",
                 "Hi Therea_a12");
  EXPECT_RENDERS("{{ ', '.join(['x', 'y']) }}|{{ 'l1\\nl2'.splitlines() }}", "x, y|[\"l1\", \"l2\"]");
  EXPECT_RENDERS("{% set d = {'a': 1, 'b': 2} %}{{ d.get('a') }}{{ d.get('z') }}{{ d.get('z', 9) }}{{ d.keys() }}"
                 "{{ d.values() }}{{ d['b'] }}{{ d.a }}",
                 "19[\"a\", \"b\"][1, 2]21");
  // A key shadows a method of the same name.
  EXPECT_RENDERS("{% set d = {'items': 'mine'} %}{{ d.items }}", "mine");
  EXPECT_ERROR_CONTAINS("{{ 'abc'.zfill(5) }}", "'zfill' is undefined");
}

TEST(ChatTemplateLanguage, IndexingSlicingMembership) {
  EXPECT_RENDERS("{% set l = [1, 2, 3, 4] %}{{ l[0] }}{{ l[-1] }}{{ l[9] }}{{ l[1:3] }}{{ l[::-1] }}{{ l[::2] }}{{ l[-2:] }}",
                 "14[2, 3][4, 3, 2, 1][1, 3][3, 4]");
  EXPECT_RENDERS("{{ 'héllo'[1] }}{{ 'héllo'[::-1] }}{{ 'héllo'[1:3] }}{{ 'abc'.0 if false else [7, 8].1 }}", "éolléhél8");
  EXPECT_RENDERS("{{ 2 in [1, 2] }}{{ 'b' in 'abc' }}{{ 'k' in {'k': 1} }}{{ 'z' not in {'k': 1} }}{{ 1 in nothing }}",
                 "truetruetruetruefalse");
  EXPECT_RENDERS("{{ nothing.deep.deeper is undefined }}{{ (none).x is undefined }}", "truetrue");
  EXPECT_ERROR_CONTAINS("{{ [1][::0] }}", "slice step cannot be zero");
}

TEST(ChatTemplateLanguage, Globals) {
  setenv("TZ", "UTC", 1);  // strftime_now formats local time
  tzset();
  EXPECT_RENDERS("{{ range(3) }}{{ range(1, 7, 2) }}{{ range(3, 0, -1) }}", "[0, 1, 2][1, 3, 5][3, 2, 1]");
  EXPECT_RENDERS("{{ strftime_now('%Y-%m-%d') }} {{ strftime_now('%d %b %Y') }} {{ strftime_now('%B %-d') }}",
                 "2026-11-25 25 Nov 2026 November 25");
  EXPECT_RENDERS("{{ strftime_now('%H:%M:%S %p %I %a %A %j %y %e') }}", "12:34:56 PM 12 Wed Wednesday 329 26 25");
  EXPECT_ERROR_CONTAINS("{{ raise_exception('Roles must alternate') }}", "the template raised an error: Roles must alternate");
  EXPECT_ERROR_CONTAINS("{{ range(0) }}{{ range(1, 2, 0) }}", "step must not be zero");
  EXPECT_ERROR_CONTAINS("{{ strftime_now('%Q') }}", "unsupported format directive '%Q'");
}

TEST(ChatTemplateLanguage, UnsupportedConstructsNameTheConstructAndPlace) {
  EXPECT_ERROR_CONTAINS("line one\n  {{ x | frobnicate }}", "chat template line 2:10: unsupported filter 'frobnicate'");
  EXPECT_ERROR_CONTAINS("{% include 'other.jinja' %}", "line 1:4: unsupported statement '{% include %}'");
  EXPECT_ERROR_CONTAINS("{{ x is prime }}", "unsupported test 'prime'");
  EXPECT_ERROR_CONTAINS("{% if true %}open", "'{% if %}' is never closed");
  EXPECT_ERROR_CONTAINS("{% endfor %}", "without a matching opening block");
  EXPECT_ERROR_CONTAINS("{{ cycler(1, 2) }}", "'cycler' is undefined; it cannot be called");
  EXPECT_ERROR_CONTAINS("{% for x in y recursive %}{% endfor %}", "recursive for loops");
  EXPECT_ERROR_CONTAINS("{{ f(*args) }}", "argument unpacking");
  EXPECT_ERROR_CONTAINS("{{ 1 + }}", "expected an expression, found '}}'");
  EXPECT_ERROR_CONTAINS("{{ a ? b }}", "unexpected character '?'");
  EXPECT_ERROR_CONTAINS("{{ range }}", "cannot print function 'range'");
  // Errors at render time carry the place too.
  EXPECT_ERROR_CONTAINS("\n\n   {{ 1 // 0 }}", "chat template line 3:9: division by zero");
}

TEST(ChatTemplateLanguage, LimitsStopRunawayTemplates) {
  RenderOptions small;
  small.limits.max_steps = 100000;
  EXPECT_NE(error_of("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}", {}, small)
                .find("evaluation steps"),
            std::string::npos);
  small.limits.max_output_bytes = 1000;
  EXPECT_NE(error_of("{% for i in range(100) %}0123456789abcdef{% endfor %}", {}, small).find("output exceeds"),
            std::string::npos);
  EXPECT_NE(error_of("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                     {}, small)
                .find("output exceeds"),
            std::string::npos);
  EXPECT_NE(error_of("{{ 'x' * 100000 }}", {}, small).find("output exceeds"), std::string::npos);
  EXPECT_ERROR_CONTAINS("{{ range(100000000) }}", "exceeds the limit");
  // Values cannot nest without bound or form cycles (printing them would never end).
  EXPECT_ERROR_CONTAINS("{% set ns = namespace(x=[]) %}{% for i in range(5000) %}{% set ns.x = [ns.x] %}{% endfor %}",
                        "nests deeper than 512 levels");
  EXPECT_ERROR_CONTAINS("{% set ns = namespace() %}{% set ns.me = [ns] %}{{ ns }}", "cannot store a namespace");
  nlohmann::ordered_json deep_json = nlohmann::ordered_json::array();
  for (int i = 0; i < 2000; ++i) deep_json = nlohmann::ordered_json::array({deep_json});
  EXPECT_NE(error_of("{{ x }}", {{"x", deep_json}}).find("input JSON nests deeper"), std::string::npos);
  EXPECT_ERROR_CONTAINS("{{ " + std::string(500, '(') + "1" + std::string(500, ')') + " }}", "nests deeper than");
  EXPECT_ERROR_CONTAINS("{{ " + std::string(500, '[') + std::string(500, ']') + " }}", "nests deeper than");
  EXPECT_ERROR_CONTAINS("{{ " + std::string(1000, '-') + "1 }}", "nests deeper than");
  std::string deep;
  for (int i = 0; i < 300; ++i) deep += "{% if true %}";
  EXPECT_ERROR_CONTAINS(deep, "nests deeper than");
}

TEST(ChatTemplateApi, RendersWithStandardVariables) {
  tandem::ChatTemplate t("{{ bos_token }}{% for m in messages %}{{ m.role }}:{{ m.content }}{{ eos_token }}{% endfor %}"
                         "{% if add_generation_prompt %}assistant:{% endif %}{{ tools is none }}{{ extra_flag }}",
                         "<s>", "</s>");
  nlohmann::json messages = nlohmann::json::parse(R"([{"role":"user","content":"hi"}])");
  EXPECT_EQ(t.render(messages, nullptr, true, {{"extra_flag", "!"}}), "<s>user:hi</s>assistant:true!");
  EXPECT_EQ(t.render(messages, nlohmann::json::array({1, 2}), false), "<s>user:hi</s>false");
  EXPECT_THROW(t.render(nlohmann::json::object(), nullptr, false), tandem::Error);
  EXPECT_THROW(tandem::ChatTemplate("{% if %}", "", ""), tandem::Error);
  tandem::ChatTemplate moved = std::move(t);
  EXPECT_EQ(moved.source().substr(0, 15), "{{ bos_token }}");
}

TEST(ChatTemplateApi, TemplateFromTokenizerConfig) {
  using nlohmann::json;
  EXPECT_EQ(tandem::chat_template_from_tokenizer_config(json{{"chat_template", "T"}}), "T");
  EXPECT_EQ(tandem::chat_template_from_tokenizer_config(json{{"bos_token", "<s>"}}), "");
  json list = json::parse(R"({"chat_template":[{"name":"tool_use","template":"A"},{"name":"default","template":"B"}]})");
  EXPECT_EQ(tandem::chat_template_from_tokenizer_config(list), "B");
  json no_default = json::parse(R"({"chat_template":[{"name":"rag","template":"A"}]})");
  EXPECT_THROW(tandem::chat_template_from_tokenizer_config(no_default), tandem::Error);
  EXPECT_THROW(tandem::chat_template_from_tokenizer_config(json{{"chat_template", 3}}), tandem::Error);
}

}  // namespace
