#pragma once

#include "base/result.hpp"

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace litterbox::cloudinit {

/// What a guest's NoCloud seed says. Every string is caller or control-plane data: the
/// renderer quotes or base64-encodes it, never pastes it.
struct seed_spec {
  std::string instance_id;                   ///< the host id
  std::string hostname;                      ///< `sb-…`
  std::string username = "agent";            ///< login user, passwordless sudo
  std::vector<std::string> authorized_keys;  ///< public key lines for the login user
  std::map<std::string, std::string> env;    ///< exported to every SSH session of the user
  std::string host_private_key;              ///< pinned ed25519 host key, OpenSSH PEM
  std::string host_public_key;               ///< its public line
  std::string ready_token;                   ///< per-host secret, [A-Za-z0-9]{16,128}
  std::string ready_device = "/dev/ttyS0";   ///< where the guest writes its ready line
};

/// The two NoCloud files.
struct seed_files {
  std::string user_data;
  std::string meta_data;
};

/// Prefix of the line a guest writes to `ready_device` once cloud-init's final stage is over:
/// "litterbox-ready <token> <status>" (status "done"), or "litterbox-failed <token> <status>"
/// when cloud-init reported errors.
inline constexpr std::string_view k_ready_word = "litterbox-ready";
inline constexpr std::string_view k_failed_word = "litterbox-failed";

/// `text` (console output) with the word after every ready/failed marker replaced by
/// "<token>": the ready token is a per-host secret and never leaves the control plane.
std::string redact_ready_tokens(std::string text);

/// Renders user-data (#cloud-config) and meta-data. Pure and deterministic. Errors:
/// invalid_spec (bad user name, hostname, instance id, token, env key or value, empty key).
result<seed_files> render_seed(const seed_spec& spec);

/// Writes `files` as a NoCloud `cidata` ISO 9660 volume at `out` (mode 0600), running
/// genisoimage with an argv (no shell), killed after `timeout`. Blocks. Errors:
/// seed_build_failed (also when genisoimage ran past `timeout`).
result<void> write_seed_image(const seed_files& files, const std::filesystem::path& out,
                              std::chrono::milliseconds timeout);

}  // namespace litterbox::cloudinit
