add_library(tandem_sampling STATIC
  ${CMAKE_CURRENT_LIST_DIR}/sampling_placeholder.cpp
)
target_link_libraries(tandem_sampling PUBLIC tandem_common)
