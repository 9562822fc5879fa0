#include "tests/support/proxy_origins.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <sys/socket.h>
#include <unistd.h>

namespace litterbox::test {
namespace {

namespace fs = std::filesystem;

/// Streams bytes into a SHA-256 digest.
class sha256 {
 public:
  sha256() : ctx_(EVP_MD_CTX_new()) {
    if (ctx_ == nullptr || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) {
      throw std::runtime_error("cannot start a SHA-256 digest");
    }
  }
  ~sha256() { EVP_MD_CTX_free(ctx_); }
  sha256(const sha256&) = delete;
  sha256& operator=(const sha256&) = delete;
  void update(std::string_view bytes) { EVP_DigestUpdate(ctx_, bytes.data(), bytes.size()); }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < len; ++i) {
      out += digits[md[i] >> 4U];
      out += digits[md[i] & 0xfU];
    }
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

/// Reads from a socket with a buffer, for the target servers.
struct socket_reader {
  int fd;
  std::string buf;
  bool fill() {
    char tmp[64 * 1024];
    const auto n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) {
      return false;
    }
    buf.append(tmp, static_cast<std::size_t>(n));
    return true;
  }
  bool line(std::string& out) {
    for (;;) {
      if (const auto pos = buf.find("\r\n"); pos != std::string::npos) {
        out = buf.substr(0, pos);
        buf.erase(0, pos + 2);
        return true;
      }
      if (!fill()) {
        return false;
      }
    }
  }
  /// Consumes exactly `n` bytes, feeding them to `sink`.
  template <class Sink>
  bool take(std::size_t n, Sink&& sink) {
    while (n > 0) {
      if (buf.empty() && !fill()) {
        return false;
      }
      const auto k = std::min(n, buf.size());
      sink(std::string_view(buf).substr(0, k));
      buf.erase(0, k);
      n -= k;
    }
    return true;
  }
};

bool send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const auto n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) {
      return false;
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

/// Runs `cmd` (openssl) quietly; throws when it fails.
void run_openssl(const std::string& cmd) {
  if (std::system((cmd + " >/dev/null 2>&1").c_str()) != 0) {
    throw std::runtime_error("failed: " + cmd);
  }
}

}  // namespace

int listen_loopback(std::uint16_t& port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(fd, 64) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("cannot listen on loopback");
  }
  port = ntohs(addr.sin_port);
  return fd;
}

std::string pattern(std::size_t size) {
  std::string out(size, '\0');
  std::uint32_t x = 2463534242U;
  for (std::size_t i = 0; i < size; ++i) {
    x ^= x << 13U;
    x ^= x >> 17U;
    x ^= x << 5U;
    out[i] = static_cast<char>(x & 0xffU);
  }
  return out;
}

std::string sha256_hex(std::string_view bytes) {
  sha256 d;
  d.update(bytes);
  return d.hex();
}

std::vector<std::string> seen_request::values(std::string_view name) const {
  std::vector<std::string> out;
  for (const auto& [n, v] : headers) {
    if (n.size() == name.size() && std::equal(n.begin(), n.end(), name.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      out.push_back(v);
    }
  }
  return out;
}

target_server::target_server()
    : fd_(listen_loopback(port_)), acceptor_([this] { accept_loop(); }) {}

target_server::~target_server() {
  ::shutdown(fd_, SHUT_RDWR);
  ::close(fd_);
  acceptor_.join();
  const std::lock_guard lock(mutex_);
  for (auto& t : workers_) {
    t.join();
  }
}

std::vector<seen_request> target_server::seen() const {
  const std::lock_guard lock(mutex_);
  return seen_;
}

void target_server::accept_loop() {
  for (;;) {
    const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      return;
    }
    const std::lock_guard lock(mutex_);
    workers_.emplace_back([this, c] {
      serve(c);
      ::close(c);
    });
  }
}

void target_server::serve(int fd) {
  socket_reader in{fd, {}};
  seen_request rq;
  std::string line;
  if (!in.line(line)) {
    return;
  }
  std::istringstream request_line(line);
  request_line >> rq.method >> rq.target;
  std::optional<std::size_t> length;
  bool chunked = false;
  while (in.line(line) && !line.empty()) {
    const auto colon = line.find(':');
    auto value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(' '));
    rq.headers.emplace_back(line.substr(0, colon), value);
  }
  if (auto v = rq.values("Content-Length"); !v.empty()) {
    length = std::stoull(v.front());
  }
  if (auto v = rq.values("Transfer-Encoding"); !v.empty() && v.front() == "chunked") {
    chunked = true;
  }
  sha256 digest;
  const auto sink = [&rq, &digest](std::string_view piece) {
    rq.body_bytes += piece.size();
    digest.update(piece);
  };
  if (length) {
    if (!in.take(*length, sink)) {
      return;
    }
  } else if (chunked) {
    for (;;) {
      if (!in.line(line)) {
        return;
      }
      const auto size = std::stoull(line, nullptr, 16);
      if (size == 0) {
        while (in.line(line) && !line.empty()) {
        }
        break;
      }
      if (!in.take(size, sink) || !in.line(line)) {
        return;
      }
    }
  }
  rq.body_sha256 = digest.hex();
  {
    const std::lock_guard lock(mutex_);
    seen_.push_back(rq);
  }
  const auto q = rq.target.find("bytes=");
  if (rq.target.rfind("/download", 0) == 0 && q != std::string::npos) {
    const auto n = std::stoull(rq.target.substr(q + 6));
    const auto body = pattern(n);
    const bool chunk = rq.target.rfind("/download-chunked", 0) == 0;
    // /download-eof: no length at all, the body ends where the connection does.
    const bool eof = rq.target.rfind("/download-eof", 0) == 0;
    std::string head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n";
    if (!eof) {
      head += chunk ? "Transfer-Encoding: chunked\r\n"
                    : "Content-Length: " + std::to_string(n) + "\r\n";
    }
    head += "Connection: close\r\n\r\n";
    if (!send_all(fd, head)) {
      return;
    }
    constexpr std::size_t piece = 1024 * 1024;
    for (std::size_t off = 0; off < n; off += piece) {
      const auto part = std::string_view(body).substr(off, piece);
      std::ostringstream size;
      size << std::hex << part.size() << "\r\n";
      if ((chunk && !send_all(fd, size.str())) || !send_all(fd, part) ||
          (chunk && !send_all(fd, "\r\n"))) {
        return;
      }
    }
    if (chunk) {
      send_all(fd, "0\r\n\r\n");
    }
    return;
  }
  const std::string body = "ok " + std::to_string(rq.body_bytes) + " " + rq.body_sha256;
  send_all(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Target: yes\r\nContent-Length: " +
                   std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
}

test_pki::test_pki(fs::path d) : dir(std::move(d)) {
  const auto p = [this](const char* name) { return (dir / name).string(); };
  run_openssl(
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=lb-test-ca "
      "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign "
      "-keyout " +
      p("ca.key") + " -out " + p("ca.pem"));
  for (const auto& [name, ip] : {std::pair{"good", "127.0.0.1"}, std::pair{"wrong", "127.0.0.2"}}) {
    std::ofstream(dir / (std::string(name) + ".ext")) << "subjectAltName=IP:" << ip << "\n";
    run_openssl("openssl req -newkey rsa:2048 -nodes -subj /CN=" + std::string(ip) + " -keyout " +
                p(name) + ".key -out " + p(name) + ".csr");
    run_openssl("openssl x509 -req -days 1 -in " + p(name) + ".csr -CA " + p("ca.pem") +
                " -CAkey " + p("ca.key") + " -CAcreateserial -extfile " + p(name) + ".ext -out " +
                p(name) + ".pem");
  }
  run_openssl(
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
      "-addext subjectAltName=IP:127.0.0.1 -keyout " +
      p("self.key") + " -out " + p("self.pem"));
}

fs::path test_pki::cert(std::string_view name) const {
  return dir / (std::string(name) + ".pem");
}

fs::path test_pki::key(std::string_view name) const {
  return dir / (std::string(name) + ".key");
}

tls_server::tls_server(const fs::path& cert, const fs::path& key) {
  ctx_ = SSL_CTX_new(TLS_server_method());
  if (ctx_ == nullptr || SSL_CTX_use_certificate_file(ctx_, cert.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx_, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    throw std::runtime_error("cannot load the test certificate");
  }
  fd_ = listen_loopback(port_);
  thread_ = std::thread([this] {
    for (;;) {
      const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) {
        return;
      }
      SSL* ssl = SSL_new(ctx_);
      SSL_set_fd(ssl, c);
      if (SSL_accept(ssl) == 1) {
        ++handshakes_;
        std::string head;
        char buf[4096];
        while (head.find("\r\n\r\n") == std::string::npos) {
          const int n = SSL_read(ssl, buf, sizeof buf);
          if (n <= 0) {
            break;
          }
          head.append(buf, static_cast<std::size_t>(n));
        }
        {
          const std::lock_guard lock(mutex_);
          heads_.push_back(head);
        }
        const std::string_view answer =
            "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ntls ok";
        SSL_write(ssl, answer.data(), static_cast<int>(answer.size()));
        SSL_shutdown(ssl);
      }
      SSL_free(ssl);
      ::close(c);
    }
  });
}

tls_server::~tls_server() {
  ::shutdown(fd_, SHUT_RDWR);
  ::close(fd_);
  thread_.join();
  SSL_CTX_free(ctx_);
}

std::vector<std::string> tls_server::heads() const {
  const std::lock_guard lock(mutex_);
  return heads_;
}

}  // namespace litterbox::test
