// One error type for everything that goes wrong between the client and a
// backend. Its message is a plain sentence a user can act on ("nothing is
// listening at 127.0.0.1:8765 (connection refused); is tandem-server running?").
#pragma once

#include <stdexcept>
#include <string>
#include <boost/system/error_code.hpp>

namespace tandem::client::net {

class NetError : public std::runtime_error {
 public:
  // `code` is the protocol's error code when the backend answered with an
  // error event (e.g. "unauthorized"), empty for transport failures.
  explicit NetError(const std::string& message, std::string code = {})
      : std::runtime_error(message), code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

// A plain-words reason for a failed network operation on `where`
// ("127.0.0.1:8765"), e.g. "connection refused: nothing is listening there".
std::string describe_network_error(const boost::system::error_code& ec, const std::string& where);

// A readable sentence for a protocol error event ({"event":"error","code":…,
// "message":…}), e.g. "the backend is overloaded (its queue is full); try again in a moment".
std::string describe_backend_error(const std::string& code, const std::string& message);

}  // namespace tandem::client::net
