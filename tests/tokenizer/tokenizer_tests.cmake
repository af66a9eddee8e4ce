# Tokenizer tests.
tandem_add_test(NAME tokenizer_conformance_test LABEL unit
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/tokenizer_conformance_test.cpp
  LIBS tandem_tokenizer)
