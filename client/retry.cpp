#include "client/retry.hpp"

#include <algorithm>
#include <random>
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

}  // namespace litterbox::client
