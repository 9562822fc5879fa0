#include "controlplane/http/auth.hpp"

#include <cctype>

namespace litterbox::controlplane::http {
namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) {
    s.remove_prefix(1);
  }
  while (!s.empty() && is_space(s.back())) {
    s.remove_suffix(1);
  }
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

}  // namespace

std::optional<std::string_view> bearer_token(std::string_view header) {
  header = trim(header);
  constexpr std::string_view k_scheme = "Bearer";
  // The auth scheme is case-insensitive (RFC 9110 §11.1) and must be followed by a space.
  if (header.size() <= k_scheme.size() || !iequals(header.substr(0, k_scheme.size()), k_scheme) ||
      !is_space(header[k_scheme.size()])) {
    return std::nullopt;
  }
  const auto token = trim(header.substr(k_scheme.size()));
  if (token.empty()) {
    return std::nullopt;
  }
  return token;
}

}  // namespace litterbox::controlplane::http
