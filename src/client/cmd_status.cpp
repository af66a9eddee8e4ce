// `tandem status`: the health of one or more backends, once or every
// --interval seconds. Exit code 0 when every backend is up, 1 otherwise.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <map>
#include <memory>
#include <vector>

#include "client/commands.h"
#include "client/net/net_error.h"
#include "client/status/backend_probe.h"
#include "client/status/status_view.h"

namespace tandem::client {
namespace {

namespace asio = net::asio;
using nlohmann::json;
using status::BackendReport;

struct StatusOptions {
  std::vector<std::string> backends{net::kDefaultBackend};
  std::string api_key;
  bool json = false;
  bool watch = false;
  double interval_s = 2.0;
  double timeout_s = 3.0;
};

// All backends at once; the reports in the order given.
std::vector<BackendReport> probe_all(const std::vector<net::BackendUrl>& urls, const StatusOptions& o) {
  asio::io_context io;
  std::vector<BackendReport> reports(urls.size());
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000));
  for (size_t i = 0; i < urls.size(); ++i)
    asio::co_spawn(io, status::probe_backend(urls[i], o.api_key, timeout),
                   [&reports, i](std::exception_ptr e, BackendReport r) {
                     if (!e) reports[i] = std::move(r);
                   });
  io.run();
  for (size_t i = 0; i < urls.size(); ++i)
    if (reports[i].state.empty()) {
      reports[i].url = urls[i].ws();
      reports[i].state = "error";
      reports[i].reason = "internal error while probing";
    }
  return reports;
}

int run_status(const StatusOptions& o) {
  std::vector<net::BackendUrl> urls;
  for (const std::string& b : o.backends) urls.push_back(net::parse_backend_url(b));
  const bool tty = isatty(STDOUT_FILENO);
  std::map<std::string, BackendReport> previous;
  // --watch ends on Ctrl-C or SIGTERM; the exit code then reflects the last round.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  if (o.watch) pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  int code = 0;
  for (;;) {
    const std::vector<BackendReport> reports = probe_all(urls, o);
    code = 0;
    for (const BackendReport& r : reports) code |= r.up() ? 0 : 1;
    std::string text;
    json out = {{"backends", json::array()}, {"all_up", code == 0}};
    for (const BackendReport& r : reports) {
      std::optional<double> live;
      if (auto it = previous.find(r.url); it != previous.end()) live = status::live_tokens_per_s(it->second, r);
      if (o.json) out["backends"].push_back(status::report_json(r, live));
      else text += status::render_backend(r, live) + "\n";
      previous[r.url] = r;
    }
    if (o.json) text = (o.watch ? out.dump() : out.dump(2)) + "\n";
    else if (o.watch && tty) text = "\x1b[H\x1b[2J" + text + "refreshing every " + std::to_string(o.interval_s).substr(0, 4) +
                                    " s; Ctrl-C to stop\n";
    std::fputs(text.c_str(), stdout);
    std::fflush(stdout);
    if (!o.watch) break;
    timespec wait{static_cast<time_t>(o.interval_s), static_cast<long>((o.interval_s - static_cast<time_t>(o.interval_s)) * 1e9)};
    if (sigtimedwait(&stop_signals, nullptr, &wait) > 0) break;
  }
  if (code != 0 && !o.json) {
    int down = 0;
    for (const auto& [url, r] : previous) down += !r.up();
    std::fprintf(stderr, "%d of %zu backend%s not up\n", down, urls.size(), urls.size() == 1 ? " is" : "s are");
  }
  return code;
}

}  // namespace

Action add_status_command(CLI::App& app) {
  auto o = std::make_shared<StatusOptions>();
  CLI::App* cmd = app.add_subcommand("status", "Show the health and load of one or more backends");
  cmd->add_option("--backend", o->backends, "A backend (repeat for several): ws://HOST:PORT, http://HOST:PORT or HOST:PORT")
      ->capture_default_str();
  cmd->add_option("--api-key", o->api_key, "The backends' API key, if they have one");
  cmd->add_flag("--json", o->json, "Print JSON (with --watch: one line per refresh)");
  cmd->add_flag("--watch", o->watch, "Refresh every --interval seconds until Ctrl-C");
  cmd->add_option("--interval", o->interval_s, "Seconds between refreshes with --watch")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--timeout", o->timeout_s, "Seconds to wait for each backend's answer")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 600.0));
  return [o] { return run_status(*o); };
}

}  // namespace tandem::client
