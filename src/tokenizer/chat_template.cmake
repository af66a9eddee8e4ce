add_library(tandem_chat_template STATIC
  ${CMAKE_CURRENT_LIST_DIR}/chat_template.cpp
  ${CMAKE_CURRENT_LIST_DIR}/jinja_builtins.cpp
  ${CMAKE_CURRENT_LIST_DIR}/jinja_interpreter.cpp
  ${CMAKE_CURRENT_LIST_DIR}/jinja_lexer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/jinja_parser.cpp
  ${CMAKE_CURRENT_LIST_DIR}/jinja_text.cpp
  ${CMAKE_CURRENT_LIST_DIR}/jinja_value.cpp
)
target_link_libraries(tandem_chat_template PUBLIC tandem_utf8 tandem_common nlohmann_json::nlohmann_json)

# chat_template_source() (in tandem_tokenizer) reads templates through the chat-template library.
target_link_libraries(tandem_tokenizer PUBLIC tandem_chat_template)
