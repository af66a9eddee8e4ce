#include "server/api_error.h"

namespace tandem::server {

std::string ApiError::type() const {
  switch (status_) {
    case 401: return "authentication_error";
    case 404: return code_ == "model_not_found" ? "invalid_request_error" : "not_found_error";
    case 413: return "invalid_request_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable_error";
    default: return status_ >= 500 ? "server_error" : "invalid_request_error";
  }
}

nlohmann::json ApiError::to_json() const {
  return {{"error",
           {{"message", what()},
            {"type", type()},
            {"param", param_.empty() ? nlohmann::json(nullptr) : nlohmann::json(param_)},
            {"code", code_}}}};
}

ApiError bad_field(const std::string& field, const std::string& message) {
  return ApiError(400, "invalid_request", "'" + field + "' " + message, field);
}

int status_for_engine_code(const std::string& code) {
  if (code == "overloaded") return 429;
  if (code == "shutting_down") return 503;
  if (code == "context_length_exceeded" || code == "invalid_request") return 400;
  return 500;
}

}  // namespace tandem::server
