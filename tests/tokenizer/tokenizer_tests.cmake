# Tokenizer tests.
tandem_add_test(NAME tokenizer_conformance_test LABEL unit
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/tokenizer_conformance_test.cpp
  LIBS tandem_tokenizer)
tandem_add_test(NAME tokenizer_unit_test LABEL unit
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/tokenizer_unit_test.cpp
  LIBS tandem_tokenizer)
tandem_add_test(NAME tokenizer_fuzz_test LABEL unit
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/tokenizer_fuzz_test.cpp
  LIBS tandem_tokenizer)

# The golden ids are regenerated from the reference and compared with the
# committed files whenever node and the reference packages are present.
find_program(TANDEM_NODE_EXECUTABLE node)
if(TANDEM_NODE_EXECUTABLE)
  add_test(NAME tokenizer_reference_ids_are_current
    COMMAND ${CMAKE_COMMAND} -DNODE=${TANDEM_NODE_EXECUTABLE} -DSOURCE_DIR=${PROJECT_SOURCE_DIR}
            -DOUT_DIR=${PROJECT_BINARY_DIR}/tests/tokenizer_reference
            -P ${CMAKE_CURRENT_LIST_DIR}/tokenizer_reference_check.cmake)
  set_tests_properties(tokenizer_reference_ids_are_current PROPERTIES
    LABELS unit SKIP_REGULAR_EXPRESSION "SKIPPED:")
endif()
tandem_add_test(NAME tokenizer_gguf_test LABEL unit
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/tokenizer_gguf_test.cpp
  LIBS tandem_tokenizer)
