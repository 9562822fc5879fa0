#pragma once

#include <chrono>
#include <functional>
#include <optional>

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

}  // namespace litterbox::client
