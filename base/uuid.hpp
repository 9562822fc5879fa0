#pragma once

#include "base/clock.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace litterbox {

/// A new UUIDv7 (RFC 9562): 48-bit Unix milliseconds from `now`, then random bits, rendered
/// lowercase and hyphenated. Time-ordered, so ids sort by creation. Thread-safe.
std::string new_uuid_v7(timestamp now);

/// The canonical lowercase form of `text` if it is a hyphenated UUID (any version), else nullopt.
std::optional<std::string> parse_uuid(std::string_view text);

}  // namespace litterbox
