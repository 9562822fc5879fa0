#pragma once

#include "base/clock.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace litterbox {

/// RFC 3339 in UTC with a `Z` suffix and six fractional digits: 2026-11-22T10:00:00.123456Z.
std::string format_rfc3339(timestamp t);

/// Parses an RFC 3339 timestamp that carries a zone (`Z` or `±HH:MM`); nullopt otherwise.
/// Fractions beyond microseconds are truncated.
std::optional<timestamp> parse_rfc3339(std::string_view text);

}  // namespace litterbox
