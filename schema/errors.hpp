#pragma once

#include "base/result.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace litterbox::schema {

/// `{"detail": <detail>, "error_code": <code>}` (API.md "Errors"); `request_id` is added
/// when not empty.
std::string error_body(std::string_view detail, std::string_view error_code,
                       std::string_view request_id = {});

/// `{"detail": <detail>}` for the errors API.md lists without a code (401, 403, 405).
std::string detail_body(std::string_view detail);

/// The 422 body: `{"detail": [{"type", "loc", "msg"}, …]}`.
std::string validation_body(const std::vector<field_issue>& issues);

/// Reads an error body back (used by the client): detail text (a 422 list is joined with
/// "; ") and error_code ("" when absent).
struct error_info {
  std::string detail;
  std::string error_code;
};
error_info parse_error_body(std::string_view body);

}  // namespace litterbox::schema
