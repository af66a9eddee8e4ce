// Subcommands of tandem-server. Each registers its options on the CLI11 app
// and returns the process exit code when run.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace tandem::cli {

using Action = std::function<int()>;

Action add_run_command(CLI::App& app);
Action add_inspect_command(CLI::App& app);
Action add_perf_command(CLI::App& app);
Action add_synth_command(CLI::App& app);
Action add_convert_command(CLI::App& app);
Action add_tokenize_command(CLI::App& app);
Action add_template_command(CLI::App& app);
Action add_perplexity_command(CLI::App& app);
Action add_serve_command(CLI::App& app);

}  // namespace tandem::cli
