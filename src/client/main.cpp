// tandem: the light tier. A terminal chat, a benchmark, a status view and a
// web UI bridge, all speaking to tandem-server over the network.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <map>
#include <stdexcept>

#include "client/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"tandem: chat with, measure and watch tandem-server back ends"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("tandem ") + TANDEM_VERSION);
  std::map<CLI::App*, tandem::client::Action> actions;
  auto add = [&](tandem::client::Action (*f)(CLI::App&)) {
    const size_t before = app.get_subcommands({}).size();
    tandem::client::Action a = f(app);
    actions[app.get_subcommands({})[before]] = std::move(a);
  };
  add(tandem::client::add_chat_command);
  add(tandem::client::add_status_command);
  add(tandem::client::add_bench_command);
  add(tandem::client::add_ui_command);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, action] : actions)
      if (sub->parsed()) return action();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 1;
}
