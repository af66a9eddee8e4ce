# Sampler tests.
tandem_add_test(NAME sampler_test LABEL unit
  SOURCES
    ${CMAKE_CURRENT_LIST_DIR}/sampler_test.cpp
    ${CMAKE_CURRENT_LIST_DIR}/stop_matcher_test.cpp
    ${CMAKE_CURRENT_LIST_DIR}/row_sampling_test.cpp
  LIBS tandem_sampling)
