#include "tests/integration/api/api_fixture.hpp"
#include "tests/support/proxy_origins.hpp"

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
  const auto hash = sha256_hex(data);

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
  EXPECT_EQ(r.body, "ok " + std::to_string(k_large) + " " + hash);

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
    EXPECT_EQ(c.body, "ok " + std::to_string(k_large) + " " + hash);
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
  EXPECT_EQ(guest.read_response(false, true).status, 100);
  ASSERT_TRUE(guest.write("hello"));
  const auto r = guest.read_response();
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.body, "ok 5 " + sha256_hex("hello"));
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
