#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

typedef struct ssl_ctx_st SSL_CTX;

// Origins for the HTTP-proxy tests (API.md "HTTP proxies"): what a proxy forwards to. Both the
// gateway integration tests and the real-guest e2e tests point proxies at these, on loopback
// (listed in LITTERBOX_HTTP_PROXY_ALLOW by the tests).
namespace litterbox::test {

/// Deterministic, position-dependent bytes: a shifted or dropped piece changes the digest.
std::string pattern(std::size_t size);

/// A listening TCP socket on 127.0.0.1:<ephemeral>; its port in `port`. Throws
/// std::runtime_error when it cannot listen.
int listen_loopback(std::uint16_t& port);

/// Lowercase hex SHA-256 of `bytes` (what `hashlib.sha256(b).hexdigest()` prints in a guest).
std::string sha256_hex(std::string_view bytes);

/// What an origin saw of one request.
struct seen_request {
  std::string method;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;
  std::size_t body_bytes = 0;
  std::string body_sha256;  ///< lowercase hex of the whole body

  /// Every value of header `name` (case-insensitive), in order.
  std::vector<std::string> values(std::string_view name) const;
};

/// An HTTP/1.1 origin on 127.0.0.1:<ephemeral> that records every request and answers
///   /download?bytes=N          N pattern() bytes with Content-Length
///   /download-chunked?bytes=N  the same, chunked
///   /download-eof?bytes=N      the same, ended by closing the connection
///   anything else              "ok <body bytes> <body sha256>" (after reading the body)
/// One thread per connection; each connection serves one request and closes.
class target_server {
 public:
  target_server();
  ~target_server();
  target_server(const target_server&) = delete;
  target_server& operator=(const target_server&) = delete;

  std::uint16_t port() const { return port_; }
  std::vector<seen_request> seen() const;
  std::size_t count() const { return seen().size(); }

 private:
  void accept_loop();
  void serve(int fd);

  std::uint16_t port_ = 0;
  int fd_;
  mutable std::mutex mutex_;
  std::vector<seen_request> seen_;
  std::vector<std::thread> workers_;
  std::thread acceptor_;
};

/// Test certificates made with the openssl tool in `dir`: a CA, a certificate it signed for
/// 127.0.0.1 ("good"), one it signed for 127.0.0.2 only ("wrong"), and a self-signed one for
/// 127.0.0.1 that no CA vouches for ("self"). Throws std::runtime_error when openssl fails.
struct test_pki {
  explicit test_pki(std::filesystem::path d);
  std::filesystem::path cert(std::string_view name) const;
  std::filesystem::path key(std::string_view name) const;
  std::filesystem::path dir;
};

/// A TLS origin on 127.0.0.1:<ephemeral> serving `cert`: answers every request "tls ok" and
/// records its request head. Counts handshakes that completed.
class tls_server {
 public:
  tls_server(const std::filesystem::path& cert, const std::filesystem::path& key);
  ~tls_server();
  tls_server(const tls_server&) = delete;
  tls_server& operator=(const tls_server&) = delete;

  std::uint16_t port() const { return port_; }
  int handshakes() const { return handshakes_.load(); }
  std::vector<std::string> heads() const;

 private:
  SSL_CTX* ctx_ = nullptr;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<int> handshakes_{0};
  mutable std::mutex mutex_;
  std::vector<std::string> heads_;
  std::thread thread_;
};

}  // namespace litterbox::test
