// `tandem bench`: placeholder registration, replaced by the real command.
#include "client/commands.h"

#include <cstdio>

namespace tandem::client {

Action add_bench_command(CLI::App& app) {
  app.add_subcommand("bench", "(not built yet)");
  return [] {
    std::fprintf(stderr, "error: tandem bench is not built yet\n");
    return 1;
  };
}

}  // namespace tandem::client
