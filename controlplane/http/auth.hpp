#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace litterbox::controlplane::http {

/// What an Authorization header amounts to (API.md "Authentication").
enum class auth_outcome {
  ok,        ///< a Bearer token that matches one of the service tokens
  missing,   ///< 401: no header, empty, or not the Bearer scheme
  rejected,  ///< 403: a Bearer token that matches none
};

/// Checks `header` (the raw Authorization value; nullptr-free, any bytes) against `tokens`.
/// Every token is compared, each in constant time, so timing does not reveal which matched.
auth_outcome check_bearer(std::string_view header, const std::vector<std::string>& tokens);

}  // namespace litterbox::controlplane::http
