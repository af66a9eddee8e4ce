// `tandem chat`: a terminal chat over the WebSocket protocol. The history
// lives here (the backend is stateless between requests); each turn sends the
// whole conversation as `messages`. Answers stream to stdout; notices and
// per-answer timings go to stderr, so piped output holds only the answers.
#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "client/chat/chat_link.h"
#include "client/chat/conversation.h"
#include "client/commands.h"
#include "client/net/net_error.h"

namespace tandem::client {
namespace {

using nlohmann::json;
using chat::ChatInputError;
using chat::ChatLink;
using chat::Conversation;
using chat::LinkEvent;

struct ChatOptions {
  std::string backend = net::kDefaultBackend;
  std::string system;
  std::string api_key;
  std::string model;
  double connect_wait_s = 20.0;
};

// stdin as lines, waited on together with the link's events.
class LineInput {
 public:
  enum class Got { line, eof, link };
  Got wait(int link_fd, std::string& line) {
    for (;;) {
      const size_t nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        line = buffer_.substr(0, nl);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        buffer_.erase(0, nl + 1);
        return Got::line;
      }
      if (eof_) {
        if (buffer_.empty()) return Got::eof;
        line = std::move(buffer_);
        buffer_.clear();
        return Got::line;
      }
      pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {link_fd, POLLIN, 0}};
      if (poll(fds, 2, -1) < 0) continue;  // EINTR
      if (fds[1].revents & POLLIN) return Got::link;
      if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
        char chunk[4096];
        const ssize_t n = read(STDIN_FILENO, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) eof_ = true;
        else buffer_.append(chunk, static_cast<size_t>(n));
      }
    }
  }

 private:
  std::string buffer_;
  bool eof_ = false;
};

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t");
  if (a == std::string::npos) return {};
  const size_t b = s.find_last_not_of(" \t");
  return s.substr(a, b - a + 1);
}

// Every line of `text` with `prefix` in front.
std::string indent(const std::string& text, const std::string& prefix) {
  std::string out;
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = text.find('\n', start);
    const size_t stop = end == std::string::npos ? text.size() : end + 1;
    out += prefix + text.substr(start, stop - start);
    start = stop;
  }
  return out;
}

std::string format_ms(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, ms < 10 ? "%.1f ms" : "%.0f ms", ms);
  return buf;
}

class ChatRepl {
 public:
  explicit ChatRepl(const ChatOptions& o)
      : options_(o),
        conversation_(o.system),
        link_(net::parse_backend_url(o.backend), net::InitOptions{o.api_key, o.model, true}),
        interactive_(isatty(STDIN_FILENO) && isatty(STDOUT_FILENO)),
        dim_(isatty(STDERR_FILENO)) {}

  int run() {
    if (interactive_)
      std::printf("tandem chat with %s. Type a message, or /help. Ctrl-C stops an answer; Ctrl-C twice or Ctrl-D quits.\n",
                  link_.url().ws().c_str());
    for (;;) {
      if (!drain_idle_events()) return 1;
      if (quit_) break;
      if (interactive_) {
        std::printf("\nyou> ");
        std::fflush(stdout);
      }
      std::string line;
      const LineInput::Got got = input_.wait(link_.ready_fd(), line);
      if (got == LineInput::Got::link) {
        if (interactive_) std::printf("\r");
        continue;
      }
      if (got == LineInput::Got::eof) {
        if (interactive_) std::printf("\n");
        break;
      }
      interrupts_in_a_row_ = 0;
      line = trim(line);
      if (line.empty()) continue;
      if (line[0] == '/') {
        command(line);
      } else if (!ask(line)) {
        return 1;
      }
      if (quit_) break;
    }
    return unsent_ > 0 ? 1 : 0;
  }

 private:
  void notice(const std::string& text) {
    std::fflush(stdout);
    std::fprintf(stderr, dim_ ? "\x1b[2m%s\x1b[0m\n" : "%s\n", text.c_str());
  }
  void problem(const std::string& text) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s\n", text.c_str());
  }

  // Link events while no answer is running. Returns false on a fatal one.
  bool drain_idle_events() {
    LinkEvent ev;
    while (link_.next(ev, std::chrono::milliseconds(0))) {
      if (!handle_link_state(ev)) return false;
      if (ev.kind != LinkEvent::Kind::interrupt) continue;
      // Ctrl-C at the prompt: the second in a row quits (the first may have
      // cancelled an answer); a lone one only says how to leave.
      if (++interrupts_in_a_row_ >= 2) {
        quit_ = true;
      } else {
        if (interactive_) std::printf("\n");
        notice("(Ctrl-C again, Ctrl-D or /quit to leave)");
      }
    }
    return true;
  }

  // connected / disconnected / fatal notices. Returns false on fatal.
  bool handle_link_state(const LinkEvent& ev) {
    switch (ev.kind) {
      case LinkEvent::Kind::connected:
        model_ = ev.message.value("model", "");
        notice(std::string(ever_connected_ ? "reconnected to " : "connected to ") + link_.url().ws() + " (model " +
               model_ + ", context " + std::to_string(ev.message.value("context_size", 0)) + " tokens)");
        ever_connected_ = true;
        down_reported_ = false;
        return true;
      case LinkEvent::Kind::disconnected:
        if (!down_reported_) {
          const bool ends_sentence = !ev.text.empty() && (ev.text.back() == '.' || ev.text.back() == '?');
          notice((ever_connected_ ? "lost the backend: " : "cannot reach the backend: ") + ev.text +
                 (ends_sentence ? "" : ".") + " Reconnecting in the background; the conversation is kept.");
          down_reported_ = true;
        }
        return true;
      case LinkEvent::Kind::fatal:
        problem("error: " + ev.text);
        return false;
      default:
        return true;
    }
  }

  // Waits for the link to be up, at most connect_wait_s. False when it is not.
  bool wait_connected() {
    if (link_.connected()) return true;
    const auto start = std::chrono::steady_clock::now();
    const auto deadline = start + std::chrono::milliseconds(static_cast<int64_t>(options_.connect_wait_s * 1000));
    bool announced = false;
    LinkEvent ev;
    while (std::chrono::steady_clock::now() < deadline) {
      // A first connect usually takes milliseconds: only a real wait is announced.
      if (!announced && (down_reported_ || std::chrono::steady_clock::now() - start > std::chrono::seconds(1))) {
        notice("waiting for the backend at " + link_.url().ws() + " (Ctrl-C to give up)...");
        announced = true;
      }
      if (!link_.next(ev, std::chrono::milliseconds(100))) continue;
      if (ev.kind == LinkEvent::Kind::interrupt) return false;
      if (!handle_link_state(ev)) {
        fatal_ = true;
        return false;
      }
      if (ev.kind == LinkEvent::Kind::connected) return true;
    }
    return link_.connected();
  }

  // One turn. Returns false when the chat must end (a fatal link error).
  bool ask(const std::string& text) {
    conversation_.add("user", text);
    const std::string id = "c" + std::to_string(++request_count_);
    json command = {{"command", "generate"}, {"id", id}, {"messages", conversation_.messages()},
                    {"params", conversation_.params()}};
    if (!wait_connected() || !link_.send(command)) {
      conversation_.drop_last();
      if (fatal_) return false;
      problem("The backend at " + link_.url().ws() +
              " is unreachable, so your message was not sent. The conversation is kept; send it again later.");
      ++unsent_;
      return true;
    }
    const auto sent = std::chrono::steady_clock::now();
    std::chrono::steady_clock::time_point first{};
    std::string answer;
    int64_t tokens = 0;
    bool cancel_sent = false;
    if (interactive_) std::printf("\n");
    std::fflush(stdout);
    LinkEvent ev;
    for (;;) {
      if (!link_.next(ev, std::chrono::milliseconds(1000))) continue;
      if (ev.kind == LinkEvent::Kind::interrupt) {
        interrupts_in_a_row_ = 1;
        if (!cancel_sent) {
          link_.send({{"command", "cancel"}, {"id", id}});
          cancel_sent = true;
        }
        continue;
      }
      if (ev.kind != LinkEvent::Kind::message) {
        if (ev.kind == LinkEvent::Kind::connected) {
          handle_link_state(ev);  // a fresh socket never saw this request
          ev.kind = LinkEvent::Kind::disconnected;
          ev.text = "the connection was replaced";
        }
        std::printf("\n");
        conversation_.drop_last();
        if (!handle_link_state(ev)) return false;
        problem("The answer was cut off because the connection to the backend dropped; send your message again.");
        return true;
      }
      const json& m = ev.message;
      if (m.value("id", "") != id) continue;
      const std::string kind = m.value("event", "");
      if (kind == "token") {
        if (tokens == 0) first = std::chrono::steady_clock::now();
        tokens += m.contains("token_ids") && m["token_ids"].is_array() ? static_cast<int64_t>(m["token_ids"].size()) : 1;
        const std::string piece = m.value("text", "");
        answer += piece;
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      } else if (kind == "error") {
        std::printf("%s", answer.empty() ? "" : "\n");
        conversation_.drop_last();
        problem(net::describe_backend_error(m.value("code", ""), m.value("message", "")));
        return true;
      } else if (kind == "done") {
        std::printf("\n");
        std::fflush(stdout);
        finish(m, answer, tokens, sent, first);
        return true;
      }
    }
  }

  void finish(const json& done, const std::string& answer, int64_t tokens, std::chrono::steady_clock::time_point sent,
              std::chrono::steady_clock::time_point first) {
    const std::string reason = done.value("finish_reason", "");
    if (reason == "cancelled" && answer.empty()) conversation_.drop_last();
    else conversation_.add("assistant", answer);
    const json timings = done.value("timings", json::object());
    const json usage = done.value("usage", json::object());
    const auto now = std::chrono::steady_clock::now();
    using ms = std::chrono::duration<double, std::milli>;
    double ttft = timings.value("ttft_ms", -1.0);
    if (ttft < 0 && tokens > 0) ttft = ms(first - sent).count();
    double tps = timings.value("tokens_per_s", -1.0);
    if (tps < 0 && tokens > 1) tps = static_cast<double>(tokens - 1) / (ms(now - first).count() / 1000.0);
    const int64_t completion = usage.value("completion_tokens", tokens);
    char line[200];
    std::snprintf(line, sizeof line, "[%s%s, %.1f tok/s, %lld tokens, %s]", "TTFT ",
                  ttft >= 0 ? format_ms(ttft).c_str() : "n/a", tps > 0 ? tps : 0.0,
                  static_cast<long long>(completion), reason == "cancelled" ? "cancelled" : reason.c_str());
    notice(line);
  }

  void command(const std::string& line) {
    const size_t space = line.find_first_of(" \t");
    const std::string name = line.substr(0, space);
    const std::string arg = space == std::string::npos ? "" : trim(line.substr(space + 1));
    try {
      if (name == "/quit" || name == "/exit") {
        quit_ = true;
      } else if (name == "/help") {
        std::printf(
            "Commands:\n"
            "  /reset                 forget the conversation (the system prompt stays)\n"
            "  /save FILE             write the conversation and params to FILE (JSON)\n"
            "  /load FILE             replace the conversation and params with FILE's\n"
            "  /params                show the sampling parameters\n"
            "  /params k=v ...        set some (k=default unsets one); known:\n%s"
            "  /help                  this list\n"
            "  /quit                  leave (so does Ctrl-D, or Ctrl-C twice)\n"
            "Ctrl-C while an answer streams stops that answer.\n",
            indent(chat::describe_params(), "    ").c_str());
      } else if (name == "/reset") {
        conversation_.reset();
        std::printf("Conversation cleared.\n");
      } else if (name == "/save") {
        if (arg.empty()) throw ChatInputError("/save needs a file name: /save FILE");
        conversation_.save(arg);
        std::printf("Saved %zu messages to %s.\n", conversation_.messages().size(), arg.c_str());
      } else if (name == "/load") {
        if (arg.empty()) throw ChatInputError("/load needs a file name: /load FILE");
        conversation_ = Conversation::load(arg);
        std::printf("Loaded %zu messages and params %s from %s.\n", conversation_.messages().size(),
                    conversation_.params().dump().c_str(), arg.c_str());
      } else if (name == "/params") {
        if (!arg.empty()) chat::apply_param_assignments(conversation_.params(), arg);
        std::printf("params: %s\n", conversation_.params().dump().c_str());
      } else {
        throw ChatInputError("unknown command " + name + "; /help lists the commands");
      }
    } catch (const ChatInputError& e) {
      problem(std::string("error: ") + e.what());
    }
    std::fflush(stdout);
  }

  ChatOptions options_;
  Conversation conversation_;
  ChatLink link_;
  LineInput input_;
  bool interactive_;
  bool dim_;
  bool quit_ = false;
  bool fatal_ = false;
  bool ever_connected_ = false;
  bool down_reported_ = false;
  int unsent_ = 0;
  int interrupts_in_a_row_ = 0;  // Ctrl-C presses since the last line typed
  int64_t request_count_ = 0;
  std::string model_;
};

}  // namespace

Action add_chat_command(CLI::App& app) {
  auto options = std::make_shared<ChatOptions>();
  CLI::App* cmd = app.add_subcommand("chat", "Chat with a backend in the terminal (WebSocket protocol)");
  cmd->add_option("--backend", options->backend, "The backend: ws://HOST:PORT, http://HOST:PORT or HOST:PORT")
      ->capture_default_str();
  cmd->add_option("--system", options->system, "A system prompt, kept across /reset");
  cmd->add_option("--api-key", options->api_key, "The backend's API key, if it has one");
  cmd->add_option("--model", options->model, "The model name to ask for (default: whatever the backend serves)");
  cmd->add_option("--connect-wait", options->connect_wait_s,
                  "Seconds a message waits for an unreachable backend before it is given up")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 3600.0));
  return [options] {
    ChatRepl repl(*options);
    return repl.run();
  };
}

}  // namespace tandem::client
