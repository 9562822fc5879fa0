#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace litterbox::hypervisor {

/// The outcome of one host-key probe.
enum class probe_status {
  matched,      ///< the server presented exactly the expected key
  mismatch,     ///< the server presented another key
  unreachable,  ///< no SSH handshake (refused, timed out, not SSH); worth retrying
};

struct probe_result {
  probe_status status = probe_status::unreachable;
  std::string detail;  ///< why, for logs and error messages; never contains key material
};

/// Connects to host:port, runs the SSH key exchange offering only ssh-ed25519 (no user
/// authentication, no config files read) and compares the server's host key blob with
/// `expected_public_line` ("ssh-ed25519 AAAA… [comment]"). Blocks for at most about
/// `timeout`. Thread-safe.
probe_result probe_host_key(std::string_view host, int port, std::string_view expected_public_line,
                            std::chrono::milliseconds timeout);

}  // namespace litterbox::hypervisor
