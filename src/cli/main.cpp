// tandem-server: the heavy tier. Subcommands run models, inspect and convert
// them, and measure speed.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <map>

#include "cli/commands.h"
#include "common/error.h"

int main(int argc, char** argv) {
  CLI::App app{"tandem-server: run large language models on hardware you own"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("tandem-server ") + TANDEM_VERSION);
  std::map<CLI::App*, tandem::cli::Action> actions;
  auto add = [&](tandem::cli::Action (*f)(CLI::App&)) {
    const size_t before = app.get_subcommands({}).size();
    tandem::cli::Action a = f(app);
    actions[app.get_subcommands({})[before]] = std::move(a);
  };
  add(tandem::cli::add_run_command);
  add(tandem::cli::add_inspect_command);
  add(tandem::cli::add_perf_command);
  add(tandem::cli::add_synth_command);
  add(tandem::cli::add_convert_command);
  add(tandem::cli::add_tokenize_command);
  add(tandem::cli::add_template_command);
  add(tandem::cli::add_perplexity_command);
  add(tandem::cli::add_serve_command);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, action] : actions)
      if (sub->parsed()) return action();
  } catch (const tandem::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 1;
}
