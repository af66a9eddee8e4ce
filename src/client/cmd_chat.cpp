// `tandem chat`: placeholder registration, replaced by the real command.
#include "client/commands.h"

#include <cstdio>

namespace tandem::client {

Action add_chat_command(CLI::App& app) {
  app.add_subcommand("chat", "(not built yet)");
  return [] {
    std::fprintf(stderr, "error: tandem chat is not built yet\n");
    return 1;
  };
}

}  // namespace tandem::client
