// Subcommands of the `tandem` client. Each registers its options on the CLI11
// app and returns the process exit code when run. The client talks to
// tandem-server (or any OpenAI-compatible server) only over the network and
// links nothing from the engine.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace tandem::client {

using Action = std::function<int()>;

Action add_chat_command(CLI::App& app);
Action add_status_command(CLI::App& app);
Action add_bench_command(CLI::App& app);
Action add_ui_command(CLI::App& app);

}  // namespace tandem::client
