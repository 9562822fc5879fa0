#pragma once

#include "base/result.hpp"

#include <nlohmann/json.hpp>

#include <string_view>

namespace litterbox::schema {

/// Parses a request body as JSON, nested at most `max_depth` deep; a blank body is null.
/// Errors: errc::invalid_json with one issue at loc ["body"] (type json_invalid), as FastAPI
/// reports it.
result<nlohmann::json> parse_json_body(std::string_view body, int max_depth);

}  // namespace litterbox::schema
