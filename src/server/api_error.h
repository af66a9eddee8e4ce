// An error the server answers with, in the OpenAI shape:
//   {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}
// HTTP routes send it with `status`; the WebSocket protocol sends `code` and
// `message` in an error event.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/error.h"

namespace tandem::server {

class ApiError : public Error {
 public:
  ApiError(int status, std::string code, const std::string& message, std::string param = {})
      : Error(message), status_(status), code_(std::move(code)), param_(std::move(param)) {}
  int status() const { return status_; }
  const std::string& code() const { return code_; }
  const std::string& param() const { return param_; }
  // "invalid_request_error", "authentication_error", ... from the status.
  std::string type() const;
  nlohmann::json to_json() const;

 private:
  int status_;
  std::string code_;
  std::string param_;
};

// 400 naming a request field: "'max_tokens' must be an integer".
ApiError bad_field(const std::string& field, const std::string& message);

// Maps an engine refusal (RequestError::code()) to its HTTP status.
int status_for_engine_code(const std::string& code);

}  // namespace tandem::server
