#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace litterbox::client {

/// Parses a lease length as people type it: a sequence of <integer><unit> with units
/// s, m, h, d, w ("2h", "1h30m", "90s", "7d"); a bare integer means seconds. Zero, negative,
/// overflowing or malformed input gives nullopt.
std::optional<std::chrono::seconds> parse_duration(std::string_view text);

}  // namespace litterbox::client
