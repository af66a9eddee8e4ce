// `tandem ui`: placeholder registration, replaced by the real command.
#include "client/commands.h"

#include <cstdio>

namespace tandem::client {

Action add_ui_command(CLI::App& app) {
  app.add_subcommand("ui", "(not built yet)");
  return [] {
    std::fprintf(stderr, "error: tandem ui is not built yet\n");
    return 1;
  };
}

}  // namespace tandem::client
