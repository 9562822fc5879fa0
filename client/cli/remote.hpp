#pragma once

#include "base/result.hpp"
#include "schema/host.hpp"

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace litterbox::client::cli {

/// One pinned key from a known_hosts text: the key type ("ssh-ed25519") and its base64 blob.
struct pinned_key {
  std::string type;
  std::string blob;
};

/// The keys of a known_hosts text, skipping blanks, comments and marker lines (@revoked,
/// @cert-authority: never trusted here).
std::vector<pinned_key> parse_known_hosts(std::string_view text);

/// The argv that runs OpenSSH against `h` with only `known_hosts_file` trusted:
/// ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile=<file> -o GlobalKnownHostsFile=/dev/null
///     -o UpdateHostKeys=no -p <port> [-i <key> -o IdentitiesOnly=yes] -l <user> -- <host> [cmd…]
std::vector<std::string> openssh_argv(const schema::host& h,
                                      const std::filesystem::path& known_hosts_file,
                                      const std::optional<std::filesystem::path>& identity,
                                      const std::vector<std::string>& command);

/// One word of POSIX shell, quoted so the remote shell passes it through unchanged.
std::string shell_quote(std::string_view word);

/// Where a `cp` operand points: a local path, or a path on the host with id `host_id`.
struct cp_operand {
  std::optional<std::string> host_id;
  std::string path;
};

/// Splits "ID:path" (ID a UUID) from a local path; anything else is local.
cp_operand parse_cp_operand(std::string_view text);

/// How to reach a host over libssh: the host's address, user and pinned keys, plus the
/// identity to authenticate with (the agent and default keys when absent).
struct ssh_target {
  schema::host host;
  std::optional<std::filesystem::path> identity;
};

/// Runs `command` (each word quoted) on the host, verifying the host key against the
/// host's known_hosts (an unknown or different key is errc::host_key_mismatch, never
/// accepted). Our stdin is streamed to the command's stdin (EOF when ours ends; a command
/// that exits without reading it ends the call at once); remote stdout/stderr go to our
/// stdout/stderr. Returns the remote exit code
/// (255 when the remote side reported none, e.g. killed by a signal). Errors: ssh,
/// host_key_mismatch.
result<int> ssh_exec(const ssh_target& target, const std::vector<std::string>& command);

/// Copies a local file to `remote_path` on the host over SFTP (into it when it is a
/// directory), byte for byte, keeping the permission bits. Errors: ssh, host_key_mismatch,
/// invalid_argument (local file unreadable).
result<void> sftp_upload(const ssh_target& target, const std::filesystem::path& local,
                         std::string remote_path);

/// Copies `remote_path` from the host to a local file (into it when it is a directory).
result<void> sftp_download(const ssh_target& target, const std::string& remote_path,
                           std::filesystem::path local);

}  // namespace litterbox::client::cli
