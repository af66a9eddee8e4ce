# Chat template tests: the language itself, conformance with the reference
# renderer on real templates, and a bounded mutation fuzz.
tandem_add_test(NAME chat_template_language_test LABEL unit
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/chat_template_language_test.cpp
  LIBS tandem_chat_template)
tandem_add_test(NAME chat_template_conformance_test LABEL unit
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/chat_template_conformance_test.cpp
  LIBS tandem_chat_template)
tandem_add_test(NAME chat_template_fuzz_test LABEL unit
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/chat_template_fuzz_test.cpp
  LIBS tandem_chat_template)

# The live oracle: re-run the reference generator and compare with the
# committed goldens, wherever the reference npm packages are installed.
find_program(TANDEM_NODE node)
if(TANDEM_NODE AND EXISTS ${PROJECT_SOURCE_DIR}/tests/reference/node_modules/@huggingface/jinja)
  add_test(NAME chat_template_reference_goldens_current
    COMMAND ${TANDEM_NODE} ${CMAKE_CURRENT_LIST_DIR}/chat_template_reference.mjs --check)
  set_tests_properties(chat_template_reference_goldens_current PROPERTIES LABELS unit TIMEOUT 120)
endif()

if(TANDEM_FUZZ AND CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  # The interpreter sources are compiled into the fuzzer itself so that they
  # carry the coverage instrumentation libFuzzer steers by.
  file(GLOB TANDEM_JINJA_SOURCES ${PROJECT_SOURCE_DIR}/src/tokenizer/jinja_*.cpp)
  add_executable(chat_template_fuzzer ${CMAKE_CURRENT_LIST_DIR}/chat_template_fuzzer.cpp ${TANDEM_JINJA_SOURCES})
  target_compile_options(chat_template_fuzzer PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(chat_template_fuzzer PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(chat_template_fuzzer PRIVATE tandem_utf8 tandem_common nlohmann_json::nlohmann_json)
endif()
