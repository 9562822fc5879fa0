// The readiness probe against a real OpenSSH server on loopback: a handshake on a connection
// opened ahead of it (ssh_connection) proves the pinned key exactly as a fresh one does, and
// the socket ends with the probe.
#include "base/process.hpp"
#include "hypervisor/ssh/probe.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace litterbox::hypervisor {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::size_t open_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/fd")) {
    ++n;
  }
  return n;
}

std::string first_line(const fs::path& p) {
  std::ifstream in(p);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string keygen(const fs::path& path) {
  const auto r = run_process(
      {"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "probe-test", "-f", path.string()},
      30s);
  EXPECT_TRUE(r && r->exit_code == 0) << process_failure_text(r);
  return first_line(path.string() + ".pub");
}

class SshProbe : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0U) << "this test runs sshd, which needs root";
    std::string pattern = (fs::temp_directory_path() / "lb-probe-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    // sshd insists on its privilege separation directory.
    fs::create_directories("/run/sshd");
    host_public_ = keygen(dir_ / "host_key");
    other_public_ = keygen(dir_ / "other_key");
    port_ = free_loopback_port();
    std::ofstream(dir_ / "sshd_config")
        << "ListenAddress 127.0.0.1\nPort " << port_ << "\nHostKey " << (dir_ / "host_key").string()
        << "\nPidFile none\nUsePAM no\nPasswordAuthentication no\n"
           "KbdInteractiveAuthentication no\nLogLevel ERROR\n";
    std::vector<std::string> args{"/usr/sbin/sshd", "-D", "-e", "-f",
                                  (dir_ / "sshd_config").string()};
    std::vector<char*> argv;
    for (auto& a : args) {
      argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    ASSERT_EQ(posix_spawn(&sshd_, argv[0], nullptr, nullptr, argv.data(), environ), 0);
    // Readiness: sshd cannot notify without systemd, so the probe itself is retried
    // (bounded); nothing below depends on how long this took.
    bool up = false;
    for (int i = 0; i < 400 && !up; ++i) {
      up = probe_host_key("127.0.0.1", port_, host_public_, 2s).status == probe_status::matched;
      if (!up) {
        ::usleep(25000);
      }
    }
    ASSERT_TRUE(up) << "sshd did not answer on " << port_;
  }

  void TearDown() override {
    if (sshd_ > 0) {
      ::kill(sshd_, SIGTERM);
      ::waitpid(sshd_, nullptr, 0);
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  fs::path dir_;
  int port_ = 0;
  pid_t sshd_ = -1;
  std::string host_public_;
  std::string other_public_;
};

TEST_F(SshProbe, AHandshakeOnAConnectionOpenedAheadMatchesThePinnedKeyAndClosesIt) {
  const auto before = open_fds();
  auto early = ssh_connection::open("127.0.0.1", port_, 2s);
  ASSERT_TRUE(early.is_open()) << early.detail();
  EXPECT_EQ(open_fds(), before + 1);
  const auto r = probe_host_key(std::move(early), "127.0.0.1", port_, host_public_, 5s);
  EXPECT_EQ(r.status, probe_status::matched) << r.detail;
  EXPECT_FALSE(early.is_open());  // NOLINT(bugprone-use-after-move): moved-from is closed
  EXPECT_EQ(open_fds(), before) << "the probe left its socket open";
}

TEST_F(SshProbe, AHandshakeOnAConnectionOpenedAheadPresentingAnotherKeyIsAMismatch) {
  auto early = ssh_connection::open("127.0.0.1", port_, 2s);
  ASSERT_TRUE(early.is_open()) << early.detail();
  const auto r = probe_host_key(std::move(early), "127.0.0.1", port_, other_public_, 5s);
  EXPECT_EQ(r.status, probe_status::mismatch) << r.detail;
}

TEST_F(SshProbe, AConnectionNobodyAcceptsIsNotOpenAndItsProbeIsUnreachable) {
  const int closed_port = free_loopback_port();
  auto early = ssh_connection::open("127.0.0.1", closed_port, 2s);
  EXPECT_FALSE(early.is_open());
  EXPECT_NE(early.detail().find("connect"), std::string::npos) << early.detail();
  const auto r = probe_host_key(std::move(early), "127.0.0.1", closed_port, host_public_, 2s);
  EXPECT_EQ(r.status, probe_status::unreachable) << r.detail;
}

TEST_F(SshProbe, AConnectionThePeerDropsAtOnceIsUnreachableAndClosedOnce) {
  // What slirp does while the guest's sshd is not listening: accept, then close.
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  const auto before = open_fds();
  auto early = ssh_connection::open("127.0.0.1", port, 2s);
  ASSERT_TRUE(early.is_open()) << early.detail();
  const int accepted = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(accepted, 0);
  ::close(accepted);
  const auto r = probe_host_key(std::move(early), "127.0.0.1", port, host_public_, 2s);
  EXPECT_EQ(r.status, probe_status::unreachable) << r.detail;
  EXPECT_EQ(open_fds(), before) << "the probe left its socket open";
  ::close(listener);
}

TEST_F(SshProbe, AConnectionToSomethingThatIsNotAnAddressIsNotOpened) {
  const auto before = open_fds();
  EXPECT_FALSE(ssh_connection::open("localhost", port_, 2s).is_open());
  EXPECT_FALSE(ssh_connection::open("127.0.0.1", 0, 2s).is_open());
  EXPECT_FALSE(ssh_connection::open("127.0.0.1", 70000, 2s).is_open());
  EXPECT_EQ(open_fds(), before);
}

TEST_F(SshProbe, AnUnusedConnectionIsClosedWhenDropped) {
  const auto before = open_fds();
  {
    auto early = ssh_connection::open("127.0.0.1", port_, 2s);
    ASSERT_TRUE(early.is_open()) << early.detail();
    auto moved = std::move(early);
    EXPECT_TRUE(moved.is_open());
    EXPECT_EQ(open_fds(), before + 1);
  }
  EXPECT_EQ(open_fds(), before);
}

}  // namespace
}  // namespace litterbox::hypervisor
