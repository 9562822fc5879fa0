#pragma once

#include "base/result.hpp"
#include "client/config.hpp"

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace litterbox::client::cli {

/// Where the CLI keeps the private keys the service minted: one 0600 file per host under
/// "$XDG_DATA_HOME/litterbox/keys" (default ~/.local/share/litterbox/keys), directories 0700.
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

  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
};

}  // namespace litterbox::client::cli
