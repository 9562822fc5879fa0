#include "hypervisor/ssh/probe.hpp"

#include <libssh/libssh.h>

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <type_traits>
#include <unistd.h>
#include <utility>

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

// The key exchange on `fd` (owned) or, for -1, on a connection libssh opens itself. libssh
// 0.10 leaves a socket it was handed open when the session ends, except when it closes it
// itself on a failed connect: whichever it did, the socket is closed exactly once.
probe_result handshake(int fd, std::string_view host, int port,
                       std::string_view expected_public_line, std::chrono::milliseconds timeout) {
  struct fd_guard {
    int fd;
    ~fd_guard() {
      if (fd >= 0) {
        ::close(fd);
      }
    }
  } owned{fd};
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
  if (owned.fd >= 0) {
    socket_t handed = owned.fd;
    if (ssh_options_set(session.get(), SSH_OPTIONS_FD, &handed) != SSH_OK) {
      return unreachable("libssh does not take the connection");
    }
  }
  const int connected = ssh_connect(session.get());
  if (owned.fd >= 0 && ssh_get_fd(session.get()) != owned.fd) {
    owned.fd = -1;  // libssh closed it
  }
  if (connected != SSH_OK) {
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

}  // namespace

probe_result probe_host_key(std::string_view host, int port, std::string_view expected_public_line,
                            std::chrono::milliseconds timeout) {
  return handshake(-1, host, port, expected_public_line, timeout);
}

probe_result probe_host_key(ssh_connection connection, std::string_view host, int port,
                            std::string_view expected_public_line,
                            std::chrono::milliseconds timeout) {
  if (!connection.is_open()) {
    return unreachable(connection.detail());
  }
  return handshake(connection.release(), host, port, expected_public_line, timeout);
}

ssh_connection::ssh_connection(ssh_connection&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), detail_(std::move(other.detail_)) {}

ssh_connection& ssh_connection::operator=(ssh_connection&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    fd_ = std::exchange(other.fd_, -1);
    detail_ = std::move(other.detail_);
  }
  return *this;
}

ssh_connection::~ssh_connection() {
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

int ssh_connection::release() {
  return std::exchange(fd_, -1);
}

ssh_connection ssh_connection::open(std::string_view host, int port,
                                    std::chrono::milliseconds timeout) {
  ssh_connection c;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  const std::string host_str(host);
  if (port <= 0 || port > 65535 || ::inet_pton(AF_INET, host_str.c_str(), &addr.sin_addr) != 1) {
    c.detail_ = "not an IPv4 address and port: " + host_str + ":" + std::to_string(port);
    return c;
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    c.detail_ = std::string("socket: ") + std::strerror(errno);
    return c;
  }
  c.fd_ = fd;
  auto fail = [&](std::string why) {
    ::close(c.fd_);
    c.fd_ = -1;
    c.detail_ = std::move(why);
    return std::move(c);
  };
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EINPROGRESS) {
      return fail(std::string("connect: ") + std::strerror(errno));
    }
    pollfd p{fd, POLLOUT, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(std::max<long long>(0, timeout.count())));
    if (ready <= 0) {
      return fail(ready == 0 ? "connect: timed out" : std::string("poll: ") + std::strerror(errno));
    }
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      return fail(std::string("connect: ") + std::strerror(err != 0 ? err : errno));
    }
  }
  // libssh expects a blocking socket, as one it connected itself.
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    return fail(std::string("fcntl: ") + std::strerror(errno));
  }
  return c;
}

}  // namespace litterbox::hypervisor
