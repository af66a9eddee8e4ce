// The model a server instance serves, and what the routes need to reach it.
#pragma once

#include <cstdint>
#include <string>

namespace tandem {
class Tokenizer;
class ChatTemplate;
class EngineService;
}  // namespace tandem

namespace tandem::server {

struct ServedModel {
  std::string id;    // the name clients pass as "model" (the file name without extension)
  std::string path;  // where it was loaded from
  const Tokenizer* tokenizer = nullptr;
  const ChatTemplate* chat_template = nullptr;  // null when the model ships none
  EngineService* engine = nullptr;
  int64_t context_window = 0;
  int64_t created = 0;  // unix seconds when loaded
};

}  // namespace tandem::server
