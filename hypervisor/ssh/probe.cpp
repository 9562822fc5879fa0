#include "hypervisor/ssh/probe.hpp"

#include <libssh/libssh.h>

#include <memory>
#include <type_traits>

namespace litterbox::hypervisor {
namespace {

struct session_deleter {
  void operator()(ssh_session s) const {
    ssh_disconnect(s);
    ssh_free(s);
  }
};
using session_ptr = std::unique_ptr<std::remove_pointer_t<ssh_session>, session_deleter>;

struct key_deleter {
  void operator()(ssh_key k) const { ssh_key_free(k); }
};
using key_ptr = std::unique_ptr<std::remove_pointer_t<ssh_key>, key_deleter>;

key_ptr import_public(std::string_view line) {
  const auto sp = line.find(' ');
  if (sp == std::string_view::npos) {
    return nullptr;
  }
  const std::string type(line.substr(0, sp));
  const auto rest = line.substr(sp + 1);
  const std::string blob(rest.substr(0, rest.find(' ')));
  const auto key_type = ssh_key_type_from_name(type.c_str());
  if (key_type == SSH_KEYTYPE_UNKNOWN) {
    return nullptr;
  }
  ssh_key raw = nullptr;
  if (ssh_pki_import_pubkey_base64(blob.c_str(), key_type, &raw) != SSH_OK) {
    return nullptr;
  }
  return key_ptr(raw);
}

probe_result unreachable(std::string detail) {
  return {probe_status::unreachable, std::move(detail)};
}

}  // namespace

probe_result probe_host_key(std::string_view host, int port, std::string_view expected_public_line,
                            std::chrono::milliseconds timeout) {
  const key_ptr expected = import_public(expected_public_line);
  if (!expected) {
    return {probe_status::mismatch, "the expected host key cannot be parsed"};
  }
  const session_ptr session(ssh_new());
  if (!session) {
    return unreachable("libssh could not create a session");
  }
  const std::string host_str(host);
  const unsigned int port_u = static_cast<unsigned int>(port);
  const long timeout_s = timeout.count() / 1000;
  const long timeout_us = (timeout.count() % 1000) * 1000;
  const int no = 0;
  // The user's ~/.ssh/config and known_hosts must not change what we check.
  ssh_options_set(session.get(), SSH_OPTIONS_PROCESS_CONFIG, &no);
  ssh_options_set(session.get(), SSH_OPTIONS_HOST, host_str.c_str());
  ssh_options_set(session.get(), SSH_OPTIONS_PORT, &port_u);
  ssh_options_set(session.get(), SSH_OPTIONS_TIMEOUT, &timeout_s);
  ssh_options_set(session.get(), SSH_OPTIONS_TIMEOUT_USEC, &timeout_us);
  ssh_options_set(session.get(), SSH_OPTIONS_HOSTKEYS, "ssh-ed25519");
  ssh_options_set(session.get(), SSH_OPTIONS_KNOWNHOSTS, "/dev/null");
  ssh_options_set(session.get(), SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null");
  if (ssh_connect(session.get()) != SSH_OK) {
    return unreachable(std::string("ssh handshake failed: ") + ssh_get_error(session.get()));
  }
  ssh_key raw = nullptr;
  if (ssh_get_server_publickey(session.get(), &raw) != SSH_OK || raw == nullptr) {
    return unreachable("the server presented no host key");
  }
  const key_ptr presented(raw);
  if (ssh_key_cmp(presented.get(), expected.get(), SSH_KEY_CMP_PUBLIC) != 0) {
    return {probe_status::mismatch, "the server presented a host key other than the pinned one"};
  }
  return {probe_status::matched, "host key matches"};
}

}  // namespace litterbox::hypervisor
