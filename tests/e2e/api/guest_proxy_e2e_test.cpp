#include "tests/e2e/api/e2e_support.hpp"
#include "tests/e2e/clones/cloned_guests.hpp"
#include "tests/support/proxy_origins.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

// API.md "HTTP proxies", from inside real guests: a program in the guest calls
// http://proxy.litterbox.internal/<name>/… and the test's own loopback origins see what
// litterboxd forwarded. The guests are clones from the shared service (tests/e2e/clones),
// whose LITTERBOX_HTTP_PROXY_ALLOW lets proxies reach 127.0.0.1.
namespace litterbox::e2e_test {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr std::string_view k_secret = "sk-e2e-7d41c0b9e3a25f86-never-in-a-guest";
constexpr std::size_t k_large = 32 * 1024 * 1024;

// Runs in the guest (python3; the reference image has no curl). argv: the proxy
// operations to run, each "<op>:<path>" with op one of get, head (GET reporting only the
// status), upload:<bytes>:<path>, download:<path>. Prints one JSON object per operation.
constexpr std::string_view k_guest_client = R"PY(
import hashlib, http.client, json, os, socket, sys
HOST = "proxy.litterbox.internal"
def conn():
    return http.client.HTTPConnection(HOST, 80, timeout=300)
def out(**kw):
    print(json.dumps(kw), flush=True)
for arg in sys.argv[1:]:
    op, _, rest = arg.partition(":")
    try:
        if op == "resolve":
            out(op=op, address=socket.gethostbyname(HOST))
        elif op == "get":
            c = conn()
            c.request("GET", rest, headers={"X-Api-Key": "the-guests-own-value"})
            r = c.getresponse()
            body = r.read()
            out(op=op, status=r.status, body=body.decode("latin-1"),
                headers={k.lower(): v for k, v in r.getheaders()})
        elif op == "upload":
            size, _, path = rest.partition(":")
            size = int(size)
            digest = hashlib.sha256()
            def pieces():
                left = size
                while left > 0:
                    piece = os.urandom(min(left, 1 << 20))
                    digest.update(piece)
                    left -= len(piece)
                    yield piece
            c = conn()
            c.request("POST", path, body=pieces(), encode_chunked=True,
                      headers={"Content-Type": "application/octet-stream"})
            r = c.getresponse()
            out(op=op, status=r.status, body=r.read().decode("latin-1"),
                sent=digest.hexdigest())
        elif op == "download":
            c = conn()
            c.request("GET", rest)
            r = c.getresponse()
            digest = hashlib.sha256()
            n = 0
            while True:
                piece = r.read(1 << 20)
                if not piece:
                    break
                digest.update(piece)
                n += len(piece)
            out(op=op, status=r.status, bytes=n, sha256=digest.hexdigest())
    except Exception as e:
        out(op=op, error=type(e).__name__ + ": " + str(e))
)PY";

/// Base64 of `bytes`: the guest script travels through the remote shell as one safe word.
std::string base64(std::string_view bytes) {
  static constexpr char table[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const auto n = (static_cast<unsigned>(static_cast<unsigned char>(bytes[i])) << 16U) |
                   (static_cast<unsigned>(static_cast<unsigned char>(bytes[i + 1])) << 8U) |
                   static_cast<unsigned>(static_cast<unsigned char>(bytes[i + 2]));
    out += table[(n >> 18U) & 63U];
    out += table[(n >> 12U) & 63U];
    out += table[(n >> 6U) & 63U];
    out += table[n & 63U];
  }
  if (i < bytes.size()) {
    auto n = static_cast<unsigned>(static_cast<unsigned char>(bytes[i])) << 16U;
    if (i + 1 < bytes.size()) {
      n |= static_cast<unsigned>(static_cast<unsigned char>(bytes[i + 1])) << 8U;
    }
    out += table[(n >> 18U) & 63U];
    out += table[(n >> 12U) & 63U];
    out += i + 1 < bytes.size() ? table[(n >> 6U) & 63U] : '=';
    out += '=';
  }
  return out;
}

/// Runs the guest client in the guest of `login` with `ops` (each a shell-safe word) and
/// returns its JSON lines; fails the test (and returns what it has) when it does not run.
std::vector<json> in_guest(const ssh_login& login, const std::vector<std::string>& ops) {
  std::string command = "echo " + base64(k_guest_client) + " | base64 -d > /tmp/lb-proxy.py";
  command += " && python3 /tmp/lb-proxy.py";
  for (const auto& op : ops) {
    command += " '" + op + "'";
  }
  const auto r = ssh_run(login, command, 600s);
  EXPECT_EQ(r.exit_code, 0) << r;
  std::vector<json> lines;
  std::size_t start = 0;
  while (start < r.out.size()) {
    const auto end = r.out.find('\n', start);
    const auto line =
        r.out.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!line.empty()) {
      lines.push_back(json::parse(line, nullptr, false));
    }
    if (end == std::string::npos) {
      break;
    }
    start = end + 1;
  }
  EXPECT_EQ(lines.size(), ops.size()) << r;
  lines.resize(ops.size());
  return lines;
}

/// A host made for the test, deleted (and checked for leftovers) however the test ends.
struct test_host {
  e2e_service& service;
  json host;
  ~test_host() {
    if (host.contains("id")) {
      const auto gone = service.remove(host["id"].get<std::string>());
      EXPECT_TRUE(gone.status == 204 || gone.status == 404) << gone;
      EXPECT_EQ(leftovers(service, host), std::vector<std::string>{});
    }
  }
};

/// Creates a clone and returns it with its login; ASSERTs through the caller on failure.
std::unique_ptr<test_host> make_host(e2e_service& service) {
  const auto created = service.create(json::object());
  EXPECT_EQ(created.status, 201) << created;
  // Built in place: a copy's destructor would delete the host.
  std::unique_ptr<test_host> h(new test_host{service, body_json(created)});
  EXPECT_EQ(h->host.value("status", ""), "active") << created;
  return h;
}

test::http_response post_json(e2e_service& service, const std::string& path, const json& body) {
  return service.http().post(path, body.dump(),
                             e2e_service::auth({{"Content-Type", "application/json"}}));
}

TEST(RealGuestProxy,
     AGuestReachesItsAttachedProxyWithTheSecretInjectedStreamsBothWaysAndNothingElse) {
  e2e_service* service = nullptr;
  ASSERT_NO_THROW(service = &cloned_guest_service());
  const temp_dir work("lb-e2e-proxy");
  test::target_server origin;
  const test::test_pki pki(work.path());
  test::tls_server untrusted(pki.cert("self"), pki.key("self"));

  auto a = make_host(*service);
  auto b = make_host(*service);
  ASSERT_EQ(a->host.value("status", ""), "active");
  ASSERT_EQ(b->host.value("status", ""), "active");
  const std::string a_id = a->host["id"];
  const std::string b_id = b->host["id"];
  const auto login_a = make_ssh_login(a->host, work.path() / "a", a->host["private_key"]);
  const auto login_b = make_ssh_login(b->host, work.path() / "b", b->host["private_key"]);

  // Proxies: "api" (the secret) on A, "other" on B, "tls" (a certificate nobody trusts) on A.
  const std::string origin_url = "http://127.0.0.1:" + std::to_string(origin.port());
  const std::string tls_url = "https://127.0.0.1:" + std::to_string(untrusted.port());
  for (const auto& [name, target, host] :
       {std::tuple{"api", origin_url, a_id}, std::tuple{"other", origin_url, b_id},
        std::tuple{"tls", tls_url, a_id}}) {
    const auto made =
        post_json(*service, "/http-proxies",
                  {{"name", name}, {"target", target}, {"headers", {{"X-Api-Key", k_secret}}}});
    ASSERT_EQ(made.status, 201) << made;
    const auto attached = post_json(
        *service, std::string("/http-proxies/") + name + "/hosts/" + host, json::object());
    ASSERT_EQ(attached.status, 200) << attached;
  }

  const std::string up = "upload:" + std::to_string(k_large) + ":/api/upload";
  const std::string down = "download:/api/download-chunked?bytes=" + std::to_string(k_large);
  const auto seen = in_guest(login_a, {"resolve", "get:/api/hello/world?q=1", "get:/other/x",
                                       "get:/tls/x", "get:/nothing/x", up, down});
  EXPECT_EQ(seen[0].value("address", ""), "169.254.77.1") << seen[0];

  // The origin got the request with the proxy's header in place of the guest's own value,
  // at the path and query the guest asked for; the guest never saw the secret.
  EXPECT_EQ(seen[1].value("status", 0), 200) << seen[1];
  EXPECT_EQ(seen[1].value("body", "").rfind("ok 0 ", 0), 0U) << seen[1];
  EXPECT_EQ(seen[1].dump().find(k_secret), std::string::npos);
  const auto requests = origin.seen();
  ASSERT_FALSE(requests.empty());
  EXPECT_EQ(requests.front().target, "/hello/world?q=1");
  EXPECT_EQ(requests.front().values("X-Api-Key"), std::vector<std::string>{std::string(k_secret)});

  // B's proxy, a proxy nobody has, and the untrusted certificate: nothing reaches an origin
  // but through A's own attachments.
  EXPECT_EQ(seen[2].value("status", 0), 404) << seen[2];
  EXPECT_EQ(seen[3].value("status", 0), 502) << seen[3];
  EXPECT_EQ(seen[3].dump().find(k_secret), std::string::npos);
  EXPECT_EQ(untrusted.heads(), std::vector<std::string>{}) << "a request crossed the bad TLS";
  EXPECT_EQ(seen[4].value("status", 0), 404) << seen[4];

  // 32 MiB each way, byte-exact.
  EXPECT_EQ(seen[5].value("status", 0), 200) << seen[5];
  EXPECT_EQ(seen[5].value("body", ""),
            "ok " + std::to_string(k_large) + " " + seen[5].value("sent", "-"))
      << seen[5];
  EXPECT_EQ(seen[6].value("status", 0), 200) << seen[6];
  EXPECT_EQ(seen[6].value("bytes", 0U), k_large) << seen[6];
  EXPECT_EQ(seen[6].value("sha256", ""), test::sha256_hex(test::pattern(k_large))) << seen[6];

  // B reaches its own proxy and not A's.
  const auto from_b = in_guest(login_b, {"get:/other/from-b", "get:/api/from-b"});
  EXPECT_EQ(from_b[0].value("status", 0), 200) << from_b[0];
  EXPECT_EQ(from_b[1].value("status", 0), 404) << from_b[1];

  // Detached: the next request from A is 404 and never reaches the origin.
  const auto detached = service->http().del("/http-proxies/api/hosts/" + a_id, service->auth());
  ASSERT_EQ(detached.status, 204) << detached;
  const auto before = origin.count();
  const auto after_detach = in_guest(login_a, {"get:/api/again"});
  EXPECT_EQ(after_detach[0].value("status", 0), 404) << after_detach[0];
  EXPECT_EQ(origin.count(), before);

  for (const char* name : {"api", "other", "tls"}) {
    const auto gone = service->http().del(std::string("/http-proxies/") + name, service->auth());
    EXPECT_EQ(gone.status, 204) << gone;
  }
  // The secret never reached litterboxd's output either.
  EXPECT_EQ(service->process().output().find(k_secret), std::string::npos);
}

}  // namespace
}  // namespace litterbox::e2e_test
