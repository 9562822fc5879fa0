#include "hypervisor/ssh/keys.hpp"

#include "hypervisor/errc.hpp"

#include <libssh/libssh.h>

#include <memory>
#include <string>

namespace litterbox::hypervisor {
namespace {

struct key_deleter {
  void operator()(ssh_key k) const { ssh_key_free(k); }
};
using key_ptr = std::unique_ptr<std::remove_pointer_t<ssh_key>, key_deleter>;

struct string_deleter {
  void operator()(char* s) const { ssh_string_free_char(s); }
};
using cstring_ptr = std::unique_ptr<char, string_deleter>;

}  // namespace

result<ssh_key_pair> generate_ed25519(std::string_view comment) {
  ssh_key raw = nullptr;
  if (ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &raw) != SSH_OK) {
    return make_error(errc::internal, "could not generate an ed25519 key");
  }
  const key_ptr key(raw);
  char* priv = nullptr;
  // libssh >= 0.9 writes ed25519 private keys in the OpenSSH format that ssh(1) reads.
  if (ssh_pki_export_privkey_base64(key.get(), nullptr, nullptr, nullptr, &priv) != SSH_OK) {
    return make_error(errc::internal, "could not export an ed25519 private key");
  }
  const cstring_ptr priv_owner(priv);
  char* pub = nullptr;
  if (ssh_pki_export_pubkey_base64(key.get(), &pub) != SSH_OK) {
    return make_error(errc::internal, "could not export an ed25519 public key");
  }
  const cstring_ptr pub_owner(pub);
  ssh_key_pair pair;
  pair.private_openssh = priv;
  if (!pair.private_openssh.empty() && pair.private_openssh.back() != '\n') {
    pair.private_openssh.push_back('\n');
  }
  pair.public_line = std::string("ssh-ed25519 ") + pub;
  if (!comment.empty()) {
    pair.public_line += ' ';
    pair.public_line += comment;
  }
  return pair;
}

bool is_valid_public_key(std::string_view line) {
  if (line.empty() || line.size() > 16384 ||
      line.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos) {
    return false;
  }
  const auto sp = line.find(' ');
  if (sp == std::string_view::npos) {
    return false;
  }
  const std::string type(line.substr(0, sp));
  auto rest = line.substr(sp + 1);
  const std::string blob(rest.substr(0, rest.find(' ')));
  const auto key_type = ssh_key_type_from_name(type.c_str());
  if (key_type == SSH_KEYTYPE_UNKNOWN || blob.empty()) {
    return false;
  }
  ssh_key raw = nullptr;
  if (ssh_pki_import_pubkey_base64(blob.c_str(), key_type, &raw) != SSH_OK) {
    return false;
  }
  const key_ptr key(raw);
  return true;
}

std::string known_hosts_line(std::string_view host, int port, std::string_view public_line) {
  // known_hosts carries "type base64" only; a comment on the public line is dropped.
  std::string_view key = public_line;
  if (const auto sp1 = key.find(' '); sp1 != std::string_view::npos) {
    if (const auto sp2 = key.find(' ', sp1 + 1); sp2 != std::string_view::npos) {
      key = key.substr(0, sp2);
    }
  }
  std::string out;
  if (port == 22) {
    out.append(host);
  } else {
    out.append("[").append(host).append("]:").append(std::to_string(port));
  }
  out.append(" ").append(key);
  return out;
}

}  // namespace litterbox::hypervisor
