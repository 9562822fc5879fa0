#pragma once

#include <system_error>

namespace litterbox::controlplane {

/// Failures of the control plane. The HTTP layer maps each to one status (API.md "Errors")
/// in exactly one function.
enum class errc {
  validation = 1,        ///< 422: input broke a rule; `issues` lists each problem
  bad_request,           ///< 400 BAD_REQUEST: well-formed but unsupported (unknown size…)
  not_found,             ///< 404 NOT_FOUND: "host not found"
  host_state,            ///< 409 HOST_STATE: the host's state forbids the operation
  idempotency_mismatch,  ///< 422: Idempotency-Key reused with another body
  quota,                 ///< 429 QUOTA
  provisioning_failed,   ///< 502 PROVISIONING_FAILED: message is the host's last_error
  unavailable,           ///< 503 UNAVAILABLE: database or hypervisor unreachable
  /// 503 UNAVAILABLE: the database lost the connection while committing, so whether the
  /// write happened is unknown; whoever needs to know reads the row back.
  outcome_unknown,
  capacity,         ///< 503 CAPACITY: no SSH port or provisioning slot left
  teardown_failed,  ///< 503 HOST_TEARDOWN: the row is kept; retry the DELETE
  internal,         ///< 500 INTERNAL
  /// 410: a resume point older than the event retention window (its successors are gone).
  history_gone,
};

const std::error_category& category();
inline std::error_code make_error_code(errc e) {
  return {static_cast<int>(e), category()};
}

}  // namespace litterbox::controlplane

template <>
struct std::is_error_code_enum<litterbox::controlplane::errc> : std::true_type {};
