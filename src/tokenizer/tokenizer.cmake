add_library(tandem_tokenizer STATIC
  ${CMAKE_CURRENT_LIST_DIR}/placeholder.cpp
)
target_link_libraries(tandem_tokenizer PUBLIC tandem_formats tandem_common nlohmann_json::nlohmann_json PRIVATE PkgConfig::PCRE2)
