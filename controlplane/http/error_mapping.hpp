#pragma once

#include "base/result.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace litterbox::controlplane::http {

/// An error as it goes on the wire: status, JSON body and the Retry-After header if any.
struct http_error {
  int status = 500;
  std::string body;
  std::optional<std::string> retry_after;
};

/// The one place errors become HTTP (API.md "Errors"): controlplane::errc and schema::errc
/// each map to one status and body shape; anything else is a 500 INTERNAL carrying
/// `request_id`. Never throws.
http_error to_http_error(const error& e, std::string_view request_id);

}  // namespace litterbox::controlplane::http
