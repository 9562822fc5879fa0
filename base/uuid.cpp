#include "base/uuid.hpp"

#include "base/secret.hpp"

#include <array>
#include <cctype>
#include <cstdint>

namespace litterbox {

std::string new_uuid_v7(timestamp now) {
  std::array<unsigned char, 16> b{};
  random_bytes(b.data(), b.size());
  const auto ms = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count());
  for (int i = 0; i < 6; ++i) {
    b[static_cast<std::size_t>(i)] =
        static_cast<unsigned char>(ms >> (8U * (5U - static_cast<unsigned>(i))));
  }
  b[6] = static_cast<unsigned char>(0x70U | (b[6] & 0x0FU));  // version 7
  b[8] = static_cast<unsigned char>(0x80U | (b[8] & 0x3FU));  // RFC 9562 variant
  static constexpr char k_digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) {
      out.push_back('-');
    }
    out.push_back(k_digits[b[i] >> 4U]);
    out.push_back(k_digits[b[i] & 0xFU]);
  }
  return out;
}

std::optional<std::string> parse_uuid(std::string_view text) {
  if (text.size() != 36) {
    return std::nullopt;
  }
  std::string out(text);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash) {
      if (out[i] != '-') {
        return std::nullopt;
      }
      continue;
    }
    if (std::isxdigit(static_cast<unsigned char>(out[i])) == 0) {
      return std::nullopt;
    }
    out[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(out[i])));
  }
  return out;
}

}  // namespace litterbox
