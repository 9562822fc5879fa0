#pragma once

#include "base/result.hpp"
#include "client/config.hpp"

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace litterbox::client::cli {

/// An ed25519 key pair: the private half in OpenSSH format (what ssh -i reads) and the
/// public half as one authorized_keys line.
struct key_pair {
  std::string private_openssh;
  std::string public_line;
};

/// Mints a fresh ed25519 pair on this machine (libssh). Errors: ssh.
result<key_pair> mint_key_pair(std::string_view comment);

/// Reads a private key file and derives its public line. Errors: ssh (unreadable or not a
/// private key).
result<key_pair> load_key_pair(const std::filesystem::path& private_key_file,
                               std::string_view comment);

/// Where the CLI keeps the private keys of the hosts it created: one 0600 file per host under
/// "$XDG_DATA_HOME/litterbox/keys" (default ~/.local/share/litterbox/keys), directories 0700.
/// A key minted for a create whose answer has not arrived yet waits under "pending/", named
/// after the create's Idempotency-Key, so that neither a lost answer nor a crash loses it and
/// a retry with the same key sends the same public half.
class key_store {
 public:
  explicit key_store(std::filesystem::path dir) : dir_(std::move(dir)) {}

  /// The store for this user, from XDG_DATA_HOME or HOME. Errors: invalid_argument when
  /// neither is set.
  static result<key_store> for_user(const env_lookup& env);

  /// Writes the key for `host_id` (atomically, mode 0600). Errors: invalid_argument for an
  /// id that is not a UUID; ssh when the file cannot be written.
  result<std::filesystem::path> save(std::string_view host_id, std::string_view private_key) const;
  /// The key file of `host_id` if one is stored.
  std::optional<std::filesystem::path> find(std::string_view host_id) const;
  /// Removes the key of `host_id`; a missing key is success.
  void remove(std::string_view host_id) const;

  /// Writes a key for the create made under `idempotency_key` (atomically, 0600), before the
  /// request is sent. Errors: ssh when the file cannot be written.
  result<std::filesystem::path> save_pending(std::string_view idempotency_key,
                                             std::string_view private_key) const;
  /// The pending key of `idempotency_key` if one is kept.
  std::optional<std::filesystem::path> find_pending(std::string_view idempotency_key) const;
  /// Moves the pending key of `idempotency_key` to the place of `host_id` and returns that
  /// path. Errors: invalid_argument for a bad id; ssh when the rename fails.
  result<std::filesystem::path> adopt_pending(std::string_view idempotency_key,
                                              std::string_view host_id) const;
  /// Removes the pending key of `idempotency_key`; a missing key is success.
  void remove_pending(std::string_view idempotency_key) const;

  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path pending_path(std::string_view idempotency_key) const;

  std::filesystem::path dir_;
};

}  // namespace litterbox::client::cli
