#pragma once

#include "base/result.hpp"
#include "hypervisor/driver.hpp"

#include <string_view>

namespace litterbox::hypervisor {

/// Generates a fresh ed25519 key pair with libssh. `comment` ends the public line.
/// Thread-safe. Errors: internal (libssh refused).
result<ssh_key_pair> generate_ed25519(std::string_view comment);

/// True if `line` is one OpenSSH public key line ("<type> <base64> [comment]") that libssh
/// can import, with no line breaks or NUL.
bool is_valid_public_key(std::string_view line);

/// The "[host]:port key-type base64" known_hosts line pinning `public_line` at host:port
/// (plain "host key-type base64" for port 22).
std::string known_hosts_line(std::string_view host, int port, std::string_view public_line);

}  // namespace litterbox::hypervisor
