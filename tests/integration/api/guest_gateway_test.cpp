#include "tests/integration/api/api_fixture.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sstream>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

// API.md "HTTP proxies", the guest side: what a guest reaches at
// http://proxy.litterbox.internal/<name>/<path>. The fake hypervisor gives every VM a
// loopback listener as its endpoint (the libvirt driver's per-host link), written to
// <fake-state-dir>/<host_id>.guest-endpoint; connecting to it is connecting from inside that
// guest. The targets are this test's own loopback servers.

namespace litterbox::test::api {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr std::string_view k_secret = "sk-gw-5b0e7f3c91d24a68-never-in-a-guest";
constexpr std::string_view k_secret2 = "key-gw-0c2f9e8d7b6a5-also-secret";
constexpr std::size_t k_large = 64 * 1024 * 1024;

std::uint64_t fnv1a(std::uint64_t h, std::string_view bytes) {
  for (const char c : bytes) {
    h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  }
  return h;
}
constexpr std::uint64_t k_fnv_basis = 14695981039346656037ULL;

/// Deterministic, position-dependent bytes: a shifted or dropped piece changes the hash.
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

/// What a target saw of one request.
struct seen_request {
  std::string method;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;
  std::size_t body_bytes = 0;
  std::uint64_t body_hash = k_fnv_basis;

  std::vector<std::string> values(std::string_view name) const {
    std::vector<std::string> out;
    for (const auto& [n, v] : headers) {
      if (n.size() == name.size() &&
          std::equal(n.begin(), n.end(), name.begin(), [](char a, char b) {
            return std::tolower(static_cast<unsigned char>(a)) ==
                   std::tolower(static_cast<unsigned char>(b));
          })) {
        out.push_back(v);
      }
    }
    return out;
  }
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

/// An HTTP/1.1 origin on 127.0.0.1 that records every request and answers
///   /download?bytes=N          N pattern bytes with Content-Length
///   /download-chunked?bytes=N  the same, chunked
///   anything else              "ok" (after reading and hashing the request body)
/// One thread per connection; each connection serves one request and closes.
class target_server {
 public:
  target_server() : fd_(listen_loopback(port_)), acceptor_([this] { accept_loop(); }) {}
  ~target_server() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    acceptor_.join();
    const std::lock_guard lock(mutex_);
    for (auto& t : workers_) {
      t.join();
    }
  }
  std::uint16_t port() const { return port_; }
  std::vector<seen_request> seen() const {
    const std::lock_guard lock(mutex_);
    return seen_;
  }
  std::size_t count() const { return seen().size(); }

 private:
  void accept_loop() {
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

  void serve(int fd) {
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
    const auto sink = [&rq](std::string_view piece) {
      rq.body_bytes += piece.size();
      rq.body_hash = fnv1a(rq.body_hash, piece);
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
    const std::string body =
        "ok " + std::to_string(rq.body_bytes) + " " + std::to_string(rq.body_hash);
    send_all(fd,
             "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Target: yes\r\nContent-Length: " +
                 std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
  }

  std::uint16_t port_ = 0;
  int fd_;
  mutable std::mutex mutex_;
  std::vector<seen_request> seen_;
  std::vector<std::thread> workers_;
  std::thread acceptor_;
};

/// Runs `cmd` (openssl) quietly; throws when it fails.
void run_openssl(const std::string& cmd) {
  if (std::system((cmd + " >/dev/null 2>&1").c_str()) != 0) {
    throw std::runtime_error("failed: " + cmd);
  }
}

/// Test certificates made with the openssl tool in `dir`: a CA (given to litterboxd as
/// SSL_CERT_FILE, in place of the system bundle), a certificate it signed for 127.0.0.1, one
/// it signed for 127.0.0.2 only, and a self-signed one for 127.0.0.1 no CA vouches for.
struct test_pki {
  explicit test_pki(fs::path d) : dir(std::move(d)) {
    const auto p = [this](const char* name) { return (dir / name).string(); };
    run_openssl(
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=lb-test-ca "
        "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign "
        "-keyout " +
        p("ca.key") + " -out " + p("ca.pem"));
    for (const auto& [name, ip] :
         {std::pair{"good", "127.0.0.1"}, std::pair{"wrong", "127.0.0.2"}}) {
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
  fs::path cert(std::string_view name) const { return dir / (std::string(name) + ".pem"); }
  fs::path key(std::string_view name) const { return dir / (std::string(name) + ".key"); }
  fs::path dir;
};

/// A TLS origin on 127.0.0.1 serving `cert`: answers every request "ok" and records its
/// request line and headers. Counts handshakes that completed.
class tls_server {
 public:
  tls_server(const fs::path& cert, const fs::path& key) {
    ctx_ = SSL_CTX_new(TLS_server_method());
    if (ctx_ == nullptr ||
        SSL_CTX_use_certificate_file(ctx_, cert.c_str(), SSL_FILETYPE_PEM) != 1 ||
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
  ~tls_server() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
    SSL_CTX_free(ctx_);
  }
  std::uint16_t port() const { return port_; }
  int handshakes() const { return handshakes_.load(); }
  std::vector<std::string> heads() const {
    const std::lock_guard lock(mutex_);
    return heads_;
  }

 private:
  SSL_CTX* ctx_ = nullptr;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<int> handshakes_{0};
  mutable std::mutex mutex_;
  std::vector<std::string> heads_;
  std::thread thread_;
};

/// The resident set of `pid` in KiB: "VmRSS" or "VmHWM" (peak) from /proc/<pid>/status.
long memory_kib(pid_t pid, std::string_view field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(std::string(field) + ":", 0) == 0) {
      return std::stol(line.substr(field.size() + 1));
    }
  }
  return -1;
}

fs::path make_temp_dir() {
  auto templ = (fs::temp_directory_path() / "lb-gateway-XXXXXX").string();
  if (::mkdtemp(templ.data()) == nullptr) {
    throw std::runtime_error("mkdtemp failed");
  }
  return templ;
}

fs::path& fake_dir() {
  static fs::path dir;
  return dir;
}

std::unique_ptr<test_pki>& pki() {
  static std::unique_ptr<test_pki> p;
  return p;
}

class guest_gateway : public api_test {
 protected:
  static constexpr int k_max_per_host = 4;

  static std::vector<std::string> process_args() {
    auto args = default_args();
    set_arg(args, "--http-proxy-allow", "127.0.0.0/8");
    set_arg(args, "--fake-state-dir", fake_dir().string());
    set_arg(args, "--guest-proxy-max-connections", std::to_string(k_max_per_host));
    return args;
  }
  static std::vector<std::pair<std::string, std::string>> process_env() {
    return {{"SSL_CERT_FILE", pki()->cert("ca").string()}};
  }
  static void SetUpTestSuite() {
    fake_dir() = make_temp_dir();
    pki() = std::make_unique<test_pki>(make_temp_dir());
    start_server(process_args(), process_env());
  }
  static void TearDownTestSuite() {
    api_test::TearDownTestSuite();
    std::error_code ec;
    fs::remove_all(fake_dir(), ec);
    fs::remove_all(pki()->dir, ec);
    pki().reset();
  }

  void TearDown() override {
    EXPECT_EQ(process().output().find(k_secret), std::string::npos) << "a header value was logged";
    EXPECT_EQ(process().output().find(k_secret2), std::string::npos) << "a header value was logged";
    api_test::TearDown();
  }

  /// A new active host and the port of its guest endpoint.
  std::pair<std::string, std::uint16_t> new_host() const {
    const auto host = create_active();
    const std::string id = host.value("id", "");
    std::ifstream in(fake_dir() / (id + ".guest-endpoint"));
    std::string endpoint;
    in >> endpoint;
    EXPECT_EQ(endpoint.rfind("127.0.0.1:", 0), 0U) << "no guest endpoint for " << id;
    const auto colon = endpoint.rfind(':');
    return {id, static_cast<std::uint16_t>(std::stoi(endpoint.substr(colon + 1)))};
  }

  void create_proxy(const std::string& name, const std::string& target) const {
    const json body{{"name", name},
                    {"target", target},
                    {"headers",
                     {{"Authorization", "Bearer " + std::string(k_secret)},
                      {"X-Api-Key", std::string(k_secret2)}}}};
    const auto r = call("POST", "/http-proxies", body.dump());
    ASSERT_EQ(r.status, 201) << r;
  }
  void attach(const std::string& name, const std::string& host_id) const {
    const auto r = call("POST", "/http-proxies/" + name + "/hosts/" + host_id);
    ASSERT_EQ(r.status, 200) << r;
  }

  /// One request from inside the guest of `port` on a fresh connection; the response never
  /// carries a header value of a proxy.
  static http_response from_guest(std::uint16_t port, http_request rq) {
    rq.headers.emplace_back("Host", "proxy.litterbox.internal");
    const http_client guest("127.0.0.1", port, 60s);
    auto r = guest.send(rq);
    expect_no_secret(r);
    return r;
  }
  static http_response guest_get(std::uint16_t port, std::string target) {
    http_request rq;
    rq.target = std::move(target);
    return from_guest(port, std::move(rq));
  }
  static void expect_no_secret(const http_response& r) {
    for (const auto secret : {k_secret, k_secret2}) {
      EXPECT_EQ(r.body.find(secret), std::string::npos) << r;
      for (const auto& h : r.headers) {
        EXPECT_EQ(h.second.find(secret), std::string::npos) << h.first;
      }
    }
  }
  static std::string loopback(std::uint16_t port, std::string_view scheme = "http") {
    return std::string(scheme) + "://127.0.0.1:" + std::to_string(port);
  }
};

TEST_F(guest_gateway, InjectedHeadersReachTheTargetReplacingTheGuestsOwnAndHopByHopIsDropped) {
  target_server target;
  const auto [host, port] = new_host();
  create_proxy("inject", loopback(target.port()));
  attach("inject", host);

  http_request rq;
  rq.target = "/inject/v1/things?limit=5&x=%2F";
  rq.headers = {{"authorization", "Bearer guest-own-value"},
                {"X-API-KEY", "guest-key"},
                {"X-Other", "kept"},
                {"Connection", "close, X-Hop"},
                {"X-Hop", "dropped"}};
  const auto r = from_guest(port, rq);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.header("X-Target"), "yes");
  EXPECT_EQ(r.body.rfind("ok 0", 0), 0U) << r.body;

  const auto seen = target.seen();
  ASSERT_EQ(seen.size(), 1U);
  const auto& got = seen.front();
  EXPECT_EQ(got.method, "GET");
  EXPECT_EQ(got.target, "/v1/things?limit=5&x=%2F");
  EXPECT_EQ(got.values("Authorization"),
            std::vector<std::string>{"Bearer " + std::string(k_secret)});
  EXPECT_EQ(got.values("X-Api-Key"), std::vector<std::string>{std::string(k_secret2)});
  EXPECT_EQ(got.values("Host"),
            std::vector<std::string>{"127.0.0.1:" + std::to_string(target.port())});
  EXPECT_EQ(got.values("X-Other"), std::vector<std::string>{"kept"});
  EXPECT_TRUE(got.values("X-Hop").empty());
  // The exchange is logged (so the TearDown's search of the log means something), by host
  // and proxy name, without the path past the name.
  // The line is written once the answer is out, so it may trail the answer a little.
  const auto line = "guest proxy host " + host + " GET /inject/… 200";
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (process().output().find(line) == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  const auto log = process().output();
  EXPECT_NE(log.find(line), std::string::npos) << log;
  EXPECT_EQ(log.find("v1/things"), std::string::npos);
}

TEST_F(guest_gateway, AProxyNameAloneForwardsToTheTargetsRoot) {
  target_server target;
  const auto [host, port] = new_host();
  create_proxy("root-only", loopback(target.port()));
  attach("root-only", host);
  EXPECT_EQ(guest_get(port, "/root-only").status, 200);
  EXPECT_EQ(guest_get(port, "/root-only?q=1").status, 200);
  const auto seen = target.seen();
  ASSERT_EQ(seen.size(), 2U);
  EXPECT_EQ(seen[0].target, "/");
  EXPECT_EQ(seen[1].target, "/?q=1");
}

TEST_F(guest_gateway, ADetachedProxyIs404OnTheNextRequestOfAKeptAliveConnection) {
  target_server target;
  const auto [host, port] = new_host();
  create_proxy("detach-me", loopback(target.port()));
  attach("detach-me", host);

  http_connection guest("127.0.0.1", port, 30s);
  ASSERT_TRUE(guest.connected()) << guest.error();
  const std::string request = "GET /detach-me/x HTTP/1.1\r\nHost: proxy.litterbox.internal\r\n\r\n";
  ASSERT_TRUE(guest.write(request));
  const auto first = guest.read_response();
  ASSERT_EQ(first.status, 200) << first;
  EXPECT_NE(first.header("Connection"), "close");

  const auto detached = call("DELETE", "/http-proxies/detach-me/hosts/" + host);
  ASSERT_EQ(detached.status, 204) << detached;
  ASSERT_TRUE(guest.write(request));
  const auto second = guest.read_response();
  EXPECT_EQ(second.status, 404) << second;
  expect_no_secret(second);
  EXPECT_EQ(target.count(), 1U);
}

TEST_F(guest_gateway, AnotherHostsProxyIs404AndNeverReachesItsTarget) {
  target_server target;
  const auto [owner, owner_port] = new_host();
  const auto [other, other_port] = new_host();
  create_proxy("owned", loopback(target.port()));
  attach("owned", owner);

  const auto r = guest_get(other_port, "/owned/secret-data");
  EXPECT_EQ(r.status, 404) << r;
  EXPECT_EQ(target.count(), 0U);
  EXPECT_EQ(guest_get(owner_port, "/owned/secret-data").status, 200);
  EXPECT_EQ(target.count(), 1U);
}

TEST_F(guest_gateway, UnknownPathsAndApiRoutesAre404AndMalformedRequestsAre400) {
  const auto [host, port] = new_host();
  for (const std::string path :
       {"/", "/hosts", "/healthz", "/openapi.json", "/metrics", "/drukbox/hosts", "/http-proxies",
        "/no-such-proxy/x", "/Upper/x", "/-dash/x", "//x"}) {
    const auto r = guest_get(port, path);
    EXPECT_EQ(r.status, 404) << path << "\n" << r;
  }
  http_request authorized;
  authorized.target = "/hosts";
  authorized.headers = {bearer()};
  EXPECT_EQ(from_guest(port, authorized).status, 404);
  const http_client guest("127.0.0.1", port, 30s);
  EXPECT_EQ(guest.send_raw("NOT HTTP AT ALL\r\n\r\n").status, 400);
  EXPECT_EQ(guest.send_raw("GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n").status,
            404);
}

TEST_F(guest_gateway, AnHttpsTargetWithAnUntrustedCertificateIsRefusedWith502) {
  tls_server tls(pki()->cert("self"), pki()->key("self"));
  const auto [host, port] = new_host();
  create_proxy("untrusted", loopback(tls.port(), "https"));
  attach("untrusted", host);
  const auto r = guest_get(port, "/untrusted/v1");
  EXPECT_EQ(r.status, 502) << r;
  EXPECT_NE(r.body.find("not trusted"), std::string::npos) << r.body;
  EXPECT_EQ(tls.handshakes(), 0);
  EXPECT_TRUE(tls.heads().empty());
}

TEST_F(guest_gateway, AnHttpsTargetWhoseCertificateNamesAnotherHostIsRefusedWith502) {
  tls_server tls(pki()->cert("wrong"), pki()->key("wrong"));  // trusted CA, 127.0.0.2 only
  const auto [host, port] = new_host();
  create_proxy("misnamed", loopback(tls.port(), "https"));
  attach("misnamed", host);
  const auto r = guest_get(port, "/misnamed/v1");
  EXPECT_EQ(r.status, 502) << r;
  EXPECT_NE(r.body.find("not trusted"), std::string::npos) << r.body;
  EXPECT_TRUE(tls.heads().empty());
}

TEST_F(guest_gateway, AnHttpsTargetWithATrustedCertificateGetsTheHeadersOverTls) {
  tls_server tls(pki()->cert("good"), pki()->key("good"));
  const auto [host, port] = new_host();
  create_proxy("trusted", loopback(tls.port(), "https"));
  attach("trusted", host);
  http_request rq;
  rq.target = "/trusted/v1/models";
  rq.headers = {{"Authorization", "guest-own-credential-x1"}};
  const auto r = from_guest(port, rq);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.body, "tls ok");
  const auto heads = tls.heads();
  ASSERT_EQ(heads.size(), 1U);
  EXPECT_EQ(heads[0].rfind("GET /v1/models HTTP/1.1\r\n", 0), 0U) << heads[0];
  EXPECT_NE(heads[0].find("Authorization: Bearer " + std::string(k_secret) + "\r\n"),
            std::string::npos);
  EXPECT_EQ(heads[0].find("guest-own-credential-x1"), std::string::npos);
  EXPECT_NE(heads[0].find("Host: 127.0.0.1:" + std::to_string(tls.port()) + "\r\n"),
            std::string::npos);
}

TEST_F(guest_gateway, LargeUploadsAndDownloadsStreamByteExactInBoundedMemory) {
  target_server target;
  const auto [host, port] = new_host();
  create_proxy("bulk", loopback(target.port()));
  attach("bulk", host);
  const auto data = pattern(k_large);
  const auto hash = fnv1a(k_fnv_basis, data);

  // The peak resident set is reset, so what it reaches below is what the transfers cost.
  const auto pid = process().pid();
  std::ofstream("/proc/" + std::to_string(pid) + "/clear_refs") << "5";
  const auto rss_before = memory_kib(pid, "VmRSS");
  ASSERT_GT(rss_before, 0);

  http_request upload;
  upload.method = "POST";
  upload.target = "/bulk/upload";
  upload.body = data;
  auto r = from_guest(port, upload);
  ASSERT_EQ(r.status, 200) << r.status << r.error;
  EXPECT_EQ(r.body, "ok " + std::to_string(k_large) + " " + std::to_string(hash));

  // Chunked upload: the chunks are re-framed, the bytes arrive unchanged.
  std::string chunked;
  constexpr std::size_t piece = 3 * 1000 * 1000;
  for (std::size_t off = 0; off < data.size(); off += piece) {
    const auto part = std::string_view(data).substr(off, piece);
    std::ostringstream size;
    size << std::hex << part.size() << "\r\n";
    chunked += size.str();
    chunked += part;
    chunked += "\r\n";
  }
  chunked += "0\r\n\r\n";
  {
    http_connection guest("127.0.0.1", port, 60s);
    ASSERT_TRUE(guest.connected());
    ASSERT_TRUE(
        guest.write("POST /bulk/upload-chunked HTTP/1.1\r\nHost: proxy.litterbox.internal\r\n"
                    "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
                    chunked));
    const auto c = guest.read_response();
    ASSERT_EQ(c.status, 200) << c.error;
    EXPECT_EQ(c.body, "ok " + std::to_string(k_large) + " " + std::to_string(hash));
  }
  chunked.clear();
  chunked.shrink_to_fit();

  for (const std::string path : {"/bulk/download?bytes=", "/bulk/download-chunked?bytes="}) {
    const auto d = guest_get(port, path + std::to_string(k_large));
    ASSERT_EQ(d.status, 200) << path << d.error;
    EXPECT_EQ(d.body.size(), k_large) << path;
    EXPECT_TRUE(d.body == data) << path << ": the body differs";
  }

  const auto peak = memory_kib(pid, "VmHWM");
  RecordProperty("litterboxd_peak_growth_kib", std::to_string(peak - rss_before));
  EXPECT_LT(peak - rss_before, 24 * 1024)
      << "litterboxd grew by " << (peak - rss_before) << " KiB moving 4 x 64 MiB";
}

TEST_F(guest_gateway, ABodyEndedByTheTargetClosingReachesAnHttp11GuestChunked) {
  target_server target;
  const auto [host, port] = new_host();
  create_proxy("eof", loopback(target.port()));
  attach("eof", host);
  http_connection guest("127.0.0.1", port, 30s);
  ASSERT_TRUE(guest.connected());
  const std::string request =
      "GET /eof/download-eof?bytes=300000 HTTP/1.1\r\nHost: proxy.litterbox.internal\r\n\r\n";
  ASSERT_TRUE(guest.write(request));
  const auto r = guest.read_response();
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.header("Transfer-Encoding"), "chunked");
  EXPECT_TRUE(r.body == pattern(300000));
  // Framed by the gateway, so the guest's connection carries the next request.
  ASSERT_TRUE(guest.write(request));
  EXPECT_EQ(guest.read_response().status, 200);
}

TEST_F(guest_gateway, HeadAnswersCarryTheTargetsLengthAndNoBody) {
  target_server target;
  const auto [host, port] = new_host();
  create_proxy("head", loopback(target.port()));
  attach("head", host);
  http_connection guest("127.0.0.1", port, 30s);
  ASSERT_TRUE(guest.connected());
  ASSERT_TRUE(guest.write("HEAD /head/download?bytes=12345 HTTP/1.1\r\nHost: x\r\n\r\n"));
  const auto r = guest.read_response(true);
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.header("Content-Length"), "12345");
  EXPECT_TRUE(r.body.empty());
  ASSERT_TRUE(guest.write("GET /head/x HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_EQ(guest.read_response().status, 200);  // nothing of a body was left on the wire
}

TEST_F(guest_gateway, ExpectContinueIsAnsweredByTheGatewayAndNotForwarded) {
  target_server target;
  const auto [host, port] = new_host();
  create_proxy("expect", loopback(target.port()));
  attach("expect", host);
  http_connection guest("127.0.0.1", port, 30s);
  ASSERT_TRUE(guest.connected());
  ASSERT_TRUE(
      guest.write("POST /expect/up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  "Expect: 100-continue\r\n\r\n"));
  EXPECT_EQ(guest.read_response().status, 100);
  ASSERT_TRUE(guest.write("hello"));
  const auto r = guest.read_response();
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.body, "ok 5 " + std::to_string(fnv1a(k_fnv_basis, "hello")));
  const auto seen = target.seen();
  ASSERT_EQ(seen.size(), 1U);
  EXPECT_TRUE(seen[0].values("Expect").empty());
}

TEST_F(guest_gateway, AnUnreachableTargetIs502AndAnOversizedHeadIs431) {
  std::uint16_t closed_port = 0;
  ::close(listen_loopback(closed_port));  // a port nothing listens on any more
  const auto [host, port] = new_host();
  create_proxy("unreachable", loopback(closed_port));
  attach("unreachable", host);
  const auto r = guest_get(port, "/unreachable/x");
  EXPECT_EQ(r.status, 502) << r;
  EXPECT_NE(r.body.find("cannot connect"), std::string::npos) << r.body;

  http_request big;
  big.target = "/unreachable/x";
  big.headers = {{"X-Big", std::string(70 * 1024, 'a')}};
  EXPECT_EQ(from_guest(port, big).status, 431);
}

TEST_F(guest_gateway, ConcurrentKeptAliveConnectionsEachGetTheirOwnAnswers) {
  target_server target;
  const auto [host, port] = new_host();
  create_proxy("many", loopback(target.port()));
  attach("many", host);
  std::vector<std::thread> guests;
  std::atomic<int> right{0};
  constexpr int k_requests = 5;
  for (int g = 0; g < k_max_per_host; ++g) {
    guests.emplace_back([&, g] {
      http_connection c("127.0.0.1", port, 30s);
      for (int i = 0; i < k_requests && c.connected(); ++i) {
        // A size of its own per request: a crossed answer has the wrong length.
        const auto size = static_cast<std::size_t>(100000 + g * 1000 + i);
        if (!c.write("GET /many/download?bytes=" + std::to_string(size) +
                     " HTTP/1.1\r\nHost: x\r\n\r\n")) {
          return;
        }
        const auto r = c.read_response();
        if (r.status == 200 && r.body == pattern(size)) {
          ++right;
        }
      }
    });
  }
  for (auto& t : guests) {
    t.join();
  }
  EXPECT_EQ(right.load(), k_max_per_host * k_requests);
  EXPECT_EQ(target.count(), static_cast<std::size_t>(k_max_per_host * k_requests));
}

TEST_F(guest_gateway, DeletingTheHostClosesItsListenerAndOpenConnections) {
  target_server target;
  const auto [host, port] = new_host();
  create_proxy("going", loopback(target.port()));
  attach("going", host);

  http_connection guest("127.0.0.1", port, 30s);
  ASSERT_TRUE(guest.connected());
  ASSERT_TRUE(guest.write("GET /going/x HTTP/1.1\r\nHost: proxy.litterbox.internal\r\n\r\n"));
  ASSERT_EQ(guest.read_response().status, 200);
  http_connection idle("127.0.0.1", port, 30s);  // never sends anything
  ASSERT_TRUE(idle.connected());

  const auto r = call("DELETE", "/hosts/" + host);
  ASSERT_TRUE(r.status == 204 || r.status == 202 || r.status == 200) << r;
  EXPECT_TRUE(guest.wait_closed(10s));
  EXPECT_TRUE(idle.wait_closed(10s));
  http_connection after("127.0.0.1", port, 5s);
  EXPECT_FALSE(after.connected());
  EXPECT_FALSE(fs::exists(fake_dir() / (host + ".guest-endpoint")));
}

TEST_F(guest_gateway, ARestartedServerServesTheEndpointsOfItsSurvivingVmsAgain) {
  target_server target;
  const auto [host, port] = new_host();
  create_proxy("survives", loopback(target.port()));
  attach("survives", host);
  ASSERT_EQ(guest_get(port, "/survives/before").status, 200);

  start_server_on(database_url(), process_args(), process_env());
  std::ifstream in(fake_dir() / (host + ".guest-endpoint"));
  std::string endpoint;
  in >> endpoint;
  ASSERT_EQ(endpoint.rfind("127.0.0.1:", 0), 0U);
  const auto new_port = static_cast<std::uint16_t>(std::stoi(endpoint.substr(10)));
  const auto r = guest_get(new_port, "/survives/after");
  EXPECT_EQ(r.status, 200) << r;
  const auto seen = target.seen();
  ASSERT_EQ(seen.size(), 2U);
  EXPECT_EQ(seen[1].target, "/after");
}

TEST_F(guest_gateway, ConnectionsBeyondTheHostsCapAre503) {
  const auto [host, port] = new_host();
  std::vector<std::unique_ptr<http_connection>> open;
  for (int i = 0; i < k_max_per_host; ++i) {
    open.push_back(std::make_unique<http_connection>("127.0.0.1", port, 30s));
    ASSERT_TRUE(open.back()->connected());
  }
  // Accepted in order: once the gateway has all of them, the next is over the cap. The
  // server is probed with a request on each, so they are known to be accepted.
  for (auto& c : open) {
    ASSERT_TRUE(c->write("GET /nothing-here/ HTTP/1.1\r\nHost: proxy.litterbox.internal\r\n\r\n"));
    ASSERT_EQ(c->read_response().status, 404);
  }
  const auto r = guest_get(port, "/nothing-here/");
  EXPECT_EQ(r.status, 503) << r;
  // Another host is not affected by this one's connections.
  const auto [other, other_port] = new_host();
  EXPECT_EQ(guest_get(other_port, "/nothing-here/").status, 404);
}

}  // namespace
}  // namespace litterbox::test::api
