#include "client/retry.hpp"

#include <algorithm>
#include <charconv>
#include <ctime>
#include <random>
#include <string>
#include <thread>

namespace litterbox::client {

retry_env system_retry_env() {
  return retry_env{
      [] { return std::chrono::steady_clock::now(); },
      [](std::chrono::milliseconds d) { std::this_thread::sleep_for(d); },
      [] {
        thread_local std::mt19937_64 gen{std::random_device{}()};
        return std::uniform_real_distribution<double>(0.0, 1.0)(gen);
      },
  };
}

std::chrono::milliseconds backoff_delay(const retry_policy& policy, int retry, double uniform,
                                        std::optional<std::chrono::milliseconds> retry_after) {
  const int shift = std::clamp(retry - 1, 0, 30);
  const auto base = policy.base_delay.count();
  const auto cap = policy.max_delay.count();
  const auto ceiling = base > (cap >> shift) ? cap : std::min(cap, base << shift);
  const double u = std::clamp(uniform, 0.0, 1.0);
  auto delay = std::chrono::milliseconds(
      static_cast<std::chrono::milliseconds::rep>(u * static_cast<double>(ceiling)));
  if (retry_after) {
    delay = std::max(delay, std::min(*retry_after, policy.max_retry_after));
  }
  return delay;
}

std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value, timestamp now) {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
    value.remove_prefix(1);
  }
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) {
    value.remove_suffix(1);
  }
  if (value.empty()) {
    return std::nullopt;
  }
  if (std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    std::int64_t seconds = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
    if (ec != std::errc{} || end != value.data() + value.size() ||
        seconds > std::int64_t{1} << 40) {
      return std::nullopt;
    }
    return std::chrono::milliseconds(seconds * 1000);
  }
  // strptime's %a/%b match abbreviated and full names; the C locale is the only one the
  // client runs in (it never calls setlocale), so English names are the ones expected.
  const std::string text(value);
  for (const char* format :
       {"%a, %d %b %Y %H:%M:%S GMT", "%a, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"}) {
    std::tm tm{};
    const char* end = ::strptime(text.c_str(), format, &tm);
    if (end == nullptr || *end != '\0') {
      continue;
    }
    const std::time_t at = ::timegm(&tm);
    if (at == static_cast<std::time_t>(-1)) {
      return std::nullopt;
    }
    const auto when = std::chrono::sys_seconds(std::chrono::seconds(at));
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(when - now);
    return std::max(wait, std::chrono::milliseconds(0));
  }
  return std::nullopt;
}

}  // namespace litterbox::client
