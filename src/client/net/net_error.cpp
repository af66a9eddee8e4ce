#include "client/net/net_error.h"

#include <boost/asio/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/websocket/error.hpp>

namespace tandem::client::net {

std::string describe_network_error(const boost::system::error_code& ec, const std::string& where) {
  namespace ae = boost::asio::error;
  namespace ws = boost::beast::websocket;
  if (ec == ae::connection_refused)
    return "nothing is listening at " + where + " (connection refused); is tandem-server running there?";
  if (ec == ae::host_not_found || ec == ae::host_not_found_try_again || ec == ae::no_data)
    return "cannot find the host in " + where + " (name lookup failed)";
  if (ec == boost::beast::error::timeout || ec == ae::timed_out)
    return where + " did not answer in time";
  if (ec == ae::network_unreachable || ec == ae::host_unreachable)
    return where + " is not reachable from this machine (" + ec.message() + ")";
  if (ec == ae::eof || ec == ae::connection_reset || ec == ae::broken_pipe || ec == ws::error::closed ||
      ec == boost::beast::http::error::end_of_stream)
    return "the backend at " + where + " closed the connection (did it stop or restart?)";
  if (ec == ae::operation_aborted) return "the connection to " + where + " was closed";
  return "network error talking to " + where + ": " + ec.message();
}

std::string describe_backend_error(const std::string& code, const std::string& message) {
  const std::string detail = message.empty() ? "" : " (" + message + ")";
  if (code == "overloaded") return "The backend is overloaded: its queue is full. Try again in a moment" + detail + ".";
  if (code == "context_length_exceeded")
    return "The conversation no longer fits the model's context window" + detail +
           ". Use /reset to start over, or lower max_tokens with /params.";
  if (code == "unauthorized" || code == "invalid_api_key")
    return "The backend refused the API key" + detail + ". Pass the right one with --api-key.";
  if (code == "model_not_found") return "The backend does not serve that model" + detail + ".";
  if (code == "shutting_down") return "The backend is shutting down" + detail + ".";
  if (code == "loading") return "The backend is still loading its model; try again shortly" + detail + ".";
  if (code == "invalid_request") return "The backend rejected the request" + detail + ".";
  if (code == "backend_unavailable" || code == "no_backend") return message.empty() ? "No backend is available." : message;
  return "The backend reported an error: " + (message.empty() ? code : message) + (code.empty() ? "" : " [" + code + "]");
}

}  // namespace tandem::client::net
