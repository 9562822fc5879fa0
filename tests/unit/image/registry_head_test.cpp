#include "hypervisor/image/registry.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <mutex>
#include <netinet/in.h>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace litterbox::hypervisor::image {
namespace {

using namespace testing;

// An HTTP server on a free loopback port that answers every request with `response` and
// records the request heads it received.
class canned_http {
 public:
  explicit canned_http(std::string response) : response_(std::move(response)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(fd_, 8) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      throw std::runtime_error("cannot listen on loopback");
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  canned_http(const canned_http&) = delete;
  canned_http& operator=(const canned_http&) = delete;
  ~canned_http() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }

  std::string addr() const { return "127.0.0.1:" + std::to_string(port_); }
  std::vector<std::string> requests() const {
    const std::lock_guard lock(mutex_);
    return requests_;
  }

 private:
  void serve() {
    for (;;) {
      const int conn = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) {
        return;  // shut down
      }
      std::string head;
      char buf[4096];
      while (head.find("\r\n\r\n") == std::string::npos) {
        const auto n = ::read(conn, buf, sizeof buf);
        if (n <= 0) {
          break;
        }
        head.append(buf, static_cast<std::size_t>(n));
      }
      {
        const std::lock_guard lock(mutex_);
        requests_.push_back(head);
      }
      (void)!::write(conn, response_.data(), response_.size());
      ::close(conn);
    }
  }

  std::string response_;
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::vector<std::string> requests_;
};

const std::string k_digest = "sha256:" + std::string(64, 'a');

image_ref ref_on(const std::string& registry) {
  return image_ref{registry, "litterbox/debian", "12", ""};
}

skopeo_registry insecure(const std::string& registry) {
  skopeo_options o;
  o.insecure_registries = {registry};
  return skopeo_registry(o);
}

TEST(RegistryHead, DigestOfAnInsecureRegistryIsItsDockerContentDigestFromOneHead) {
  canned_http server("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nDocker-Content-Digest: " +
                     k_digest + "\r\nConnection: close\r\n\r\n");
  auto registry = insecure(server.addr());
  EXPECT_EQ(registry.head_digest(ref_on(server.addr())), k_digest);
  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 1U);
  EXPECT_EQ(requests[0].rfind("HEAD /v2/litterbox/debian/manifests/12 HTTP/1.1\r\n", 0), 0U)
      << requests[0];
  // The media types skopeo asks for, so that the digest is that of the bytes it fetches.
  EXPECT_NE(requests[0].find("application/vnd.oci.image.index.v1+json"), std::string::npos);
  EXPECT_NE(requests[0].find("application/vnd.docker.distribution.manifest.list.v2+json"),
            std::string::npos);
  EXPECT_NE(requests[0].find("application/vnd.oci.image.manifest.v1+json"), std::string::npos);
  EXPECT_NE(requests[0].find("application/vnd.docker.distribution.manifest.v2+json"),
            std::string::npos);
  EXPECT_EQ(requests[0].find("Authorization"), std::string::npos);
}

TEST(RegistryHead, RegistryWantingCredentialsGivesNoDigest) {
  canned_http server(
      "HTTP/1.1 401 Unauthorized\r\nWww-Authenticate: Bearer "
      "realm=\"x\"\r\nDocker-Content-Digest: " +
      k_digest + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  auto registry = insecure(server.addr());
  EXPECT_EQ(registry.head_digest(ref_on(server.addr())), std::nullopt);
  EXPECT_EQ(server.requests().size(), 1U);
}

TEST(RegistryHead, AnswerWithoutAValidSha256DigestGivesNoDigest) {
  for (const std::string header :
       {"", "Docker-Content-Digest: md5:abc\r\n", "Docker-Content-Digest: sha256:abc\r\n"}) {
    canned_http server("HTTP/1.1 200 OK\r\n" + header +
                       "Content-Length: 0\r\nConnection: close\r\n\r\n");
    auto registry = insecure(server.addr());
    EXPECT_EQ(registry.head_digest(ref_on(server.addr())), std::nullopt) << header;
  }
}

TEST(RegistryHead, NothingIsAskedWithAnAuthFileOrForADigestPinnedReference) {
  canned_http server("HTTP/1.1 200 OK\r\nDocker-Content-Digest: " + k_digest +
                     "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  skopeo_options with_auth;
  with_auth.insecure_registries = {server.addr()};
  with_auth.auth_file = "/nonexistent/auth.json";
  skopeo_registry authed(with_auth);
  EXPECT_EQ(authed.head_digest(ref_on(server.addr())), std::nullopt);
  auto registry = insecure(server.addr());
  EXPECT_EQ(registry.head_digest(image_ref{server.addr(), "litterbox/debian", "", k_digest}),
            std::nullopt);
  EXPECT_TRUE(server.requests().empty());
}

TEST(RegistryHead, UnreachableRegistryGivesNoDigest) {
  std::string addr;
  {
    canned_http gone("HTTP/1.1 200 OK\r\n\r\n");
    addr = gone.addr();
  }  // nothing listens there any more
  auto registry = insecure(addr);
  EXPECT_EQ(registry.head_digest(ref_on(addr)), std::nullopt);
}

TEST(RegistryHead, ManifestUrlUsesHttpsUnlessInsecureAndDockerHubsApiHost) {
  EXPECT_EQ(manifest_url(image_ref{"docker.io", "library/alpine", "3", ""}, false),
            "https://registry-1.docker.io/v2/library/alpine/manifests/3");
  EXPECT_EQ(manifest_url(ref_on("127.0.0.1:5000"), true),
            "http://127.0.0.1:5000/v2/litterbox/debian/manifests/12");
}

}  // namespace
}  // namespace litterbox::hypervisor::image
