add_library(tandem_chat_template STATIC
  ${CMAKE_CURRENT_LIST_DIR}/chat_template_placeholder.cpp
)
target_link_libraries(tandem_chat_template PUBLIC tandem_common nlohmann_json::nlohmann_json)
