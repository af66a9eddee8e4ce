# UTF-8 helpers, shared by the tokenizer and the chat-template interpreter.
add_library(tandem_utf8 STATIC ${CMAKE_CURRENT_LIST_DIR}/utf8.cpp)
target_link_libraries(tandem_utf8 PUBLIC tandem_common)

add_library(tandem_tokenizer STATIC
  ${CMAKE_CURRENT_LIST_DIR}/byte_level.cpp
  ${CMAKE_CURRENT_LIST_DIR}/unicode_nfc.cpp
  ${CMAKE_CURRENT_LIST_DIR}/regex.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pipeline.cpp
  ${CMAKE_CURRENT_LIST_DIR}/bpe_model.cpp
  ${CMAKE_CURRENT_LIST_DIR}/added_token_matcher.cpp
  ${CMAKE_CURRENT_LIST_DIR}/bpe_tokenizer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_json.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_gguf.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_load.cpp
  ${CMAKE_CURRENT_LIST_DIR}/incremental_decoder.cpp
  ${CMAKE_CURRENT_LIST_DIR}/chat_template_source.cpp
)
target_link_libraries(tandem_tokenizer PUBLIC tandem_utf8 tandem_formats tandem_common nlohmann_json::nlohmann_json PRIVATE PkgConfig::PCRE2)
