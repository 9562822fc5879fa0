#pragma once

#include <system_error>

namespace litterbox::client {

/// Failures the client reports, mirroring the error types of Litterbox SDKs so callers can
/// branch on the kind of failure rather than on HTTP statuses.
enum class errc {
  auth = 1,             ///< 401/403: the service token is missing or rejected
  not_found,            ///< 404: unknown host (or route)
  conflict,             ///< 409: the host's state forbids the operation
  provisioning_failed,  ///< 502: the host could not be brought to active; message = last_error
  unavailable,          ///< 503, or the service could not be reached at all
  api_error,            ///< any other non-success response; message names the status
  bad_response,         ///< the service answered with something that is not the contract
  timeout,              ///< wait_for gave up before the host reached the wanted state
  invalid_argument,     ///< the caller's input or configuration is unusable
  ssh,                  ///< SSH/SFTP to a host failed (connection, auth, transfer)
  host_key_mismatch,    ///< the host presented a key that is not the pinned one
  quota,                ///< 429: a quota or rate limit was hit; the message says when to retry
};

const std::error_category& category();
inline std::error_code make_error_code(errc e) {
  return {static_cast<int>(e), category()};
}

}  // namespace litterbox::client

template <>
struct std::is_error_code_enum<litterbox::client::errc> : std::true_type {};
