#pragma once

#include "base/clock.hpp"

#include <chrono>
#include <functional>
#include <optional>
#include <string_view>

namespace litterbox::client {

/// How often and how patiently a call is retried after a transport failure or a 503.
struct retry_policy {
  int max_attempts = 5;                              ///< first try included
  std::chrono::milliseconds base_delay{200};         ///< ceiling of the first backoff
  std::chrono::milliseconds max_delay{5000};         ///< ceiling of any backoff
  std::chrono::milliseconds max_retry_after{30000};  ///< cap on a server's Retry-After
};

/// The effects retries need, injected so tests run without sleeping or randomness.
struct retry_env {
  std::function<std::chrono::steady_clock::time_point()> now;
  std::function<void(std::chrono::milliseconds)> sleep;
  std::function<double()> uniform;  ///< a number in [0, 1)
};

/// The real clock, sleep and a thread-local PRNG.
retry_env system_retry_env();

/// The pause before retry number `retry` (1 for the first retry): "full jitter" — uniform in
/// [0, min(max_delay, base_delay * 2^(retry-1))] — so many clients retrying after one outage
/// spread out instead of arriving together. A server's Retry-After (capped) is a floor.
std::chrono::milliseconds backoff_delay(const retry_policy& policy, int retry, double uniform,
                                        std::optional<std::chrono::milliseconds> retry_after);

/// A Retry-After header value as a wait from `now` (RFC 9110 §10.2.3): delay-seconds
/// ("120") or an HTTP-date in any of its three forms ("Sun, 06 Nov 1994 08:49:37 GMT", the
/// obsolete "Sunday, 06-Nov-94 08:49:37 GMT" and asctime's "Sun Nov  6 08:49:37 1994"). A
/// date already past is a wait of zero; anything else is nullopt (the header is ignored).
std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value, timestamp now);

}  // namespace litterbox::client
