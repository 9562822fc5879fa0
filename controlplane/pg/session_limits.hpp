#pragma once

#include <chrono>

namespace litterbox::controlplane::pg {

/// Bounds every session of the service gets, so that no call waits on the database without
/// limit: on the server (statement, lock and idle-in-transaction timeouts) and on the wire
/// (connect timeout, TCP keepalives and tcp_user_timeout, which end a call whose packets go
/// unanswered). Zero leaves a bound out.
struct session_limits {
  std::chrono::seconds connect_timeout{5};
  std::chrono::milliseconds statement_timeout{30'000};
  std::chrono::milliseconds lock_timeout{5'000};
  std::chrono::milliseconds idle_in_transaction_timeout{60'000};
  /// tcp_user_timeout; keepalives probe after a third of it, every sixth, three times.
  std::chrono::milliseconds tcp_timeout{15'000};
};

}  // namespace litterbox::controlplane::pg
