add_library(tandem_engine STATIC
  ${CMAKE_CURRENT_LIST_DIR}/placeholder.cpp
)
target_link_libraries(tandem_engine PUBLIC tandem_sampling tandem_common)
