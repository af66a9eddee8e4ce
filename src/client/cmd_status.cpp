// `tandem status`: placeholder registration, replaced by the real command.
#include "client/commands.h"

#include <cstdio>

namespace tandem::client {

Action add_status_command(CLI::App& app) {
  app.add_subcommand("status", "(not built yet)");
  return [] {
    std::fprintf(stderr, "error: tandem status is not built yet\n");
    return 1;
  };
}

}  // namespace tandem::client
