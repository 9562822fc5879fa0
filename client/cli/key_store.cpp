#include "client/cli/key_store.hpp"

#include "base/uuid.hpp"
#include "client/errc.hpp"

#include <libssh/libssh.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <sys/stat.h>
#include <unistd.h>

namespace litterbox::client::cli {
namespace {

/// mkdir -p with mode 0700 for every directory it creates.
bool make_private_dirs(const std::filesystem::path& dir) {
  std::filesystem::path current;
  for (const auto& part : dir) {
    current /= part;
    if (::mkdir(current.c_str(), 0700) != 0 && errno != EEXIST) {
      return false;
    }
  }
  return true;
}

/// Writes `text` to `final_path` through a temporary file in the same directory (0600,
/// fsync, rename): the key is there completely or not at all.
result<std::filesystem::path> write_private_file(const std::filesystem::path& final_path,
                                                 std::string text) {
  const auto tmp_path = final_path.parent_path() / ("." + final_path.filename().string() + ".tmp");
  ::unlink(tmp_path.c_str());
  const int fd = ::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return make_error(errc::invalid_argument,
                      "cannot write " + tmp_path.string() + ": " + std::strerror(errno));
  }
  if (!text.empty() && text.back() != '\n') {
    text.push_back('\n');  // OpenSSH refuses a private key file without the final newline
  }
  std::size_t done = 0;
  while (done < text.size()) {
    const auto n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      const std::string why = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp_path.c_str());
      return make_error(errc::invalid_argument, "cannot write " + tmp_path.string() + ": " + why);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0 || ::rename(tmp_path.c_str(), final_path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp_path.c_str());
    return make_error(errc::invalid_argument,
                      "cannot store key " + final_path.string() + ": " + why);
  }
  return final_path;
}

struct key_deleter {
  void operator()(ssh_key_struct* k) const { ssh_key_free(k); }
};
using key_ptr = std::unique_ptr<ssh_key_struct, key_deleter>;

struct string_deleter {
  void operator()(char* p) const { ssh_string_free_char(p); }
};
using cstring_ptr = std::unique_ptr<char, string_deleter>;

result<key_pair> export_pair(ssh_key key, std::string_view comment) {
  char* priv = nullptr;
  // libssh >= 0.9 writes ed25519 private keys in the OpenSSH format that ssh(1) reads.
  if (ssh_pki_export_privkey_base64(key, nullptr, nullptr, nullptr, &priv) != SSH_OK) {
    return make_error(errc::ssh, "could not export the private key");
  }
  const cstring_ptr priv_owner(priv);
  ssh_key pub_raw = nullptr;
  if (ssh_pki_export_privkey_to_pubkey(key, &pub_raw) != SSH_OK) {
    return make_error(errc::ssh, "could not derive the public key");
  }
  const key_ptr pub_key(pub_raw);
  char* pub = nullptr;
  if (ssh_pki_export_pubkey_base64(pub_key.get(), &pub) != SSH_OK) {
    return make_error(errc::ssh, "could not export the public key");
  }
  const cstring_ptr pub_owner(pub);
  key_pair pair;
  pair.private_openssh = priv;
  if (!pair.private_openssh.empty() && pair.private_openssh.back() != '\n') {
    pair.private_openssh.push_back('\n');
  }
  pair.public_line = std::string(ssh_key_type_to_char(ssh_key_type(key))) + " " + pub;
  if (!comment.empty()) {
    pair.public_line += ' ';
    pair.public_line += comment;
  }
  return pair;
}

std::string hex(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) {
    char buf[3];
    std::snprintf(buf, sizeof buf, "%02x", static_cast<unsigned char>(c));
    out += buf;
  }
  return out;
}

}  // namespace

result<key_pair> mint_key_pair(std::string_view comment) {
  ssh_key raw = nullptr;
  if (ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &raw) != SSH_OK) {
    return make_error(errc::ssh, "could not generate an ed25519 key");
  }
  const key_ptr key(raw);
  return export_pair(key.get(), comment);
}

result<key_pair> load_key_pair(const std::filesystem::path& private_key_file,
                               std::string_view comment) {
  ssh_key raw = nullptr;
  if (ssh_pki_import_privkey_file(private_key_file.c_str(), nullptr, nullptr, nullptr, &raw) !=
      SSH_OK) {
    return make_error(errc::ssh, "cannot read the private key " + private_key_file.string());
  }
  const key_ptr key(raw);
  return export_pair(key.get(), comment);
}

result<key_store> key_store::for_user(const env_lookup& env) {
  if (const auto xdg = env("XDG_DATA_HOME"); xdg && !xdg->empty() && xdg->front() == '/') {
    return key_store(std::filesystem::path(*xdg) / "litterbox" / "keys");
  }
  if (const auto home = env("HOME"); home && !home->empty()) {
    return key_store(std::filesystem::path(*home) / ".local" / "share" / "litterbox" / "keys");
  }
  return make_error(errc::invalid_argument, "neither XDG_DATA_HOME nor HOME is set");
}

result<std::filesystem::path> key_store::save(std::string_view host_id,
                                              std::string_view private_key) const {
  const auto id = parse_uuid(host_id);
  if (!id) {
    return make_error(errc::invalid_argument, "not a host id: " + std::string(host_id));
  }
  if (!make_private_dirs(dir_)) {
    return make_error(errc::invalid_argument,
                      "cannot create " + dir_.string() + ": " + std::strerror(errno));
  }
  return write_private_file(dir_ / *id, std::string(private_key));
}

std::optional<std::filesystem::path> key_store::find(std::string_view host_id) const {
  const auto id = parse_uuid(host_id);
  if (!id) {
    return std::nullopt;
  }
  auto path = dir_ / *id;
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) {
    return path;
  }
  return std::nullopt;
}

void key_store::remove(std::string_view host_id) const {
  if (const auto id = parse_uuid(host_id)) {
    std::error_code ec;
    std::filesystem::remove(dir_ / *id, ec);
  }
}

std::filesystem::path key_store::pending_path(std::string_view idempotency_key) const {
  // Hex keeps any Idempotency-Key (it is caller text) a single safe file name.
  return dir_ / "pending" / hex(idempotency_key.substr(0, 100));
}

result<std::filesystem::path> key_store::save_pending(std::string_view idempotency_key,
                                                      std::string_view private_key) const {
  const auto path = pending_path(idempotency_key);
  if (!make_private_dirs(path.parent_path())) {
    return make_error(errc::ssh,
                      "cannot create " + path.parent_path().string() + ": " + std::strerror(errno));
  }
  auto r = write_private_file(path, std::string(private_key));
  if (!r) {
    return make_error(errc::ssh, r.error().message);
  }
  return r;
}

std::optional<std::filesystem::path> key_store::find_pending(
    std::string_view idempotency_key) const {
  auto path = pending_path(idempotency_key);
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) {
    return path;
  }
  return std::nullopt;
}

result<std::filesystem::path> key_store::adopt_pending(std::string_view idempotency_key,
                                                       std::string_view host_id) const {
  const auto id = parse_uuid(host_id);
  if (!id) {
    return make_error(errc::invalid_argument, "not a host id: " + std::string(host_id));
  }
  const auto from = pending_path(idempotency_key);
  const auto to = dir_ / *id;
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return make_error(errc::ssh, "cannot move " + from.string() + " to " + to.string() + ": " +
                                     std::strerror(errno));
  }
  return to;
}

void key_store::remove_pending(std::string_view idempotency_key) const {
  std::error_code ec;
  std::filesystem::remove(pending_path(idempotency_key), ec);
}

}  // namespace litterbox::client::cli
