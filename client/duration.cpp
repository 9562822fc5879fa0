#include "client/duration.hpp"

#include <cstdint>
#include <limits>

namespace litterbox::client {

std::optional<std::chrono::seconds> parse_duration(std::string_view text) {
  // Ten years is far beyond any lease; the cap keeps the arithmetic below from overflowing.
  constexpr std::int64_t k_max = std::int64_t{10} * 366 * 86400;
  if (text.empty()) {
    return std::nullopt;
  }
  std::int64_t total = 0;
  std::size_t i = 0;
  bool bare = true;
  while (i < text.size()) {
    std::int64_t n = 0;
    const std::size_t start = i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      n = n * 10 + (text[i] - '0');
      if (n > k_max) {
        return std::nullopt;
      }
      ++i;
    }
    if (i == start) {
      return std::nullopt;
    }
    std::int64_t unit = 1;
    if (i < text.size()) {
      bare = false;
      switch (text[i]) {
        case 's':
          unit = 1;
          break;
        case 'm':
          unit = 60;
          break;
        case 'h':
          unit = 3600;
          break;
        case 'd':
          unit = 86400;
          break;
        case 'w':
          unit = 7 * 86400;
          break;
        default:
          return std::nullopt;
      }
      ++i;
    } else if (!bare) {
      return std::nullopt;  // "1h30" is ambiguous
    }
    total += n * unit;
    if (total > k_max) {
      return std::nullopt;
    }
  }
  if (total <= 0) {
    return std::nullopt;
  }
  return std::chrono::seconds(total);
}

}  // namespace litterbox::client
