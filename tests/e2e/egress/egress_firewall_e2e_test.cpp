#include "base/process.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/libvirt/egress_firewall.hpp"
#include "hypervisor/libvirt/libvirt_driver.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <string>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

// The real iptables/ip6tables rules, without a guest: each test runs in a network namespace
// of its own (its own loopback and its own firewall tables), so nothing here touches the
// host's rules or other people's guests. QEMU's uid is played by a forked child that drops
// to libvirt-qemu's uid before connecting. Needs root.
namespace litterbox::hypervisor {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

struct qemu_identity {
  unsigned uid = 0;
  unsigned gid = 0;
};

qemu_identity qemu_user() {
  const passwd* pw = ::getpwnam("libvirt-qemu");
  if (pw == nullptr) {
    throw std::runtime_error("no libvirt-qemu user (apt-get install libvirt-daemon-system)");
  }
  return {pw->pw_uid, pw->pw_gid};
}

std::string run_ok(const std::vector<std::string>& argv) {
  auto r = run_process(argv, 30s);
  if (!r || r->exit_code != 0) {
    throw std::runtime_error(argv[0] + " failed: " + (r ? r->err : r.error().message));
  }
  return r->out;
}

/// A TCP listener on `address`:`port` (0: any free port) for as long as it lives.
class listener {
 public:
  listener(const std::string& address, int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET, address.c_str(), &a.sin_addr);
    socklen_t len = sizeof a;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), len) != 0 ||
        ::listen(fd_, 8) != 0 || ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      throw std::runtime_error("cannot listen on " + address + ": " + std::strerror(errno));
    }
    port_ = ntohs(a.sin_port);
  }
  ~listener() { ::close(fd_); }
  listener(const listener&) = delete;
  listener& operator=(const listener&) = delete;
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

/// Connects to `address`:`port` as `who` (a forked child that drops to it), or as root when
/// `who` is empty. True when the connection was established within two seconds.
bool connects(const std::optional<qemu_identity>& who, const std::string& address, int port) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (who && (::syscall(SYS_setgroups, 0, nullptr) != 0 ||
                ::syscall(SYS_setresgid, who->gid, who->gid, who->gid) != 0 ||
                ::syscall(SYS_setresuid, who->uid, who->uid, who->uid) != 0)) {
      ::_exit(3);
    }
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET, address.c_str(), &a.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      ::_exit(0);
    }
    if (errno != EINPROGRESS) {
      ::_exit(1);
    }
    pollfd p{fd, POLLOUT, 0};
    int err = 1;
    socklen_t len = sizeof err;
    if (::poll(&p, 1, 2000) == 1) {
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    }
    ::_exit(err == 0 ? 0 : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) > 1) {
    throw std::runtime_error("the connecting child could not take the uid");
  }
  return WEXITSTATUS(status) == 0;
}

class EgressFirewallInPrivateNetns : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0U) << "needs root";
    ASSERT_EQ(::unshare(CLONE_NEWNET), 0) << std::strerror(errno);
    run_ok({"ip", "link", "set", "lo", "up"});
    qemu_ = qemu_user();
    dir_ = fs::temp_directory_path() / ("lb-egress-fw-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    std::ofstream(dir_ / "resolv.conf") << "nameserver 127.0.0.53\n";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  iptables_egress_firewall firewall(egress_policy policy = {}) {
    return iptables_egress_firewall(std::move(policy), (dir_ / "resolv.conf").string());
  }

  qemu_identity qemu_;
  fs::path dir_;
};

TEST_F(EgressFirewallInPrivateNetns,
       QemuUidReachesThisHostBeforeApplyAndNeverAfterWhileRootStillDoes) {
  const listener service("127.0.0.1", 0);
  EXPECT_TRUE(connects(qemu_, "127.0.0.1", service.port())) << "the probe itself must work";
  EXPECT_EQ(probe_local_connect(ip_family::v4, qemu_.uid, qemu_.gid, 1000ms),
            probe_outcome::connected);
  auto fw = firewall();
  EXPECT_FALSE(fw.inspect({qemu_.uid}).ok);
  ASSERT_TRUE(fw.apply({qemu_.uid}));
  const auto state = fw.inspect({qemu_.uid});
  EXPECT_TRUE(state.ok) << state.detail;
  EXPECT_FALSE(connects(qemu_, "127.0.0.1", service.port()));
  EXPECT_EQ(probe_local_connect(ip_family::v4, qemu_.uid, qemu_.gid, 1000ms),
            probe_outcome::refused);
  EXPECT_EQ(probe_local_connect(ip_family::v6, qemu_.uid, qemu_.gid, 1000ms),
            probe_outcome::refused);
  EXPECT_TRUE(connects(std::nullopt, "127.0.0.1", service.port()))
      << "the rules must only match QEMU's uid";
}

TEST_F(EgressFirewallInPrivateNetns, HostResolverOnLoopbackStaysReachableOnPort53Only) {
  const listener dns("127.0.0.53", 53);
  const listener other("127.0.0.53", 0);
  auto fw = firewall();
  ASSERT_TRUE(fw.apply({qemu_.uid}));
  EXPECT_TRUE(connects(qemu_, "127.0.0.53", 53)) << "guests must still resolve names";
  EXPECT_FALSE(connects(qemu_, "127.0.0.53", other.port()));
}

TEST_F(EgressFirewallInPrivateNetns, WithoutInternetEvenTheResolverIsRejected) {
  const listener dns("127.0.0.53", 53);
  egress_policy off;
  off.internet = false;
  auto fw = firewall(off);
  ASSERT_TRUE(fw.apply({qemu_.uid}));
  EXPECT_FALSE(connects(qemu_, "127.0.0.53", 53));
  EXPECT_TRUE(fw.inspect({qemu_.uid}).ok);
}

TEST_F(EgressFirewallInPrivateNetns,
       AnAcceptAboveTheJumpIsCaughtByInspectAndProbeAndApplyRepairsIt) {
  auto fw = firewall();
  ASSERT_TRUE(fw.apply({qemu_.uid}));
  run_ok({"iptables", "-w", "-I", "OUTPUT", "1", "-j", "ACCEPT"});
  const auto broken = fw.inspect({qemu_.uid});
  EXPECT_FALSE(broken.ok);
  EXPECT_NE(broken.detail.find("-A OUTPUT -j ACCEPT"), std::string::npos) << broken.detail;
  EXPECT_EQ(probe_local_connect(ip_family::v4, qemu_.uid, qemu_.gid, 1000ms),
            probe_outcome::connected);
  ASSERT_TRUE(fw.apply({qemu_.uid}));
  const auto repaired = fw.inspect({qemu_.uid});
  EXPECT_TRUE(repaired.ok) << repaired.detail;
  EXPECT_EQ(probe_local_connect(ip_family::v4, qemu_.uid, qemu_.gid, 1000ms),
            probe_outcome::refused);
  EXPECT_NE(run_ok({"iptables", "-w", "-S", "OUTPUT"}).find("-A OUTPUT -j ACCEPT"),
            std::string::npos)
      << "other rules are left alone, only moved below ours";
}

TEST_F(EgressFirewallInPrivateNetns, ApplyReplacesTheOldRuleAndJumpsForOtherUidsAndIsIdempotent) {
  const auto uid = std::to_string(qemu_.uid);
  run_ok({"iptables",   "-w",          "-I",      "OUTPUT",    "-m",
          "owner",      "--uid-owner", uid,       "-m",        "addrtype",
          "--dst-type", "LOCAL",       "-m",      "conntrack", "--ctstate",
          "NEW",        "-m",          "comment", "--comment", "litterbox-guest-isolation",
          "-j",         "REJECT"});
  auto fw = firewall();
  ASSERT_TRUE(fw.apply({65534U}));
  ASSERT_TRUE(fw.apply({qemu_.uid}));
  ASSERT_TRUE(fw.apply({qemu_.uid}));
  for (const auto* tool : {"iptables", "ip6tables"}) {
    const auto output = run_ok({tool, "-w", "-S", "OUTPUT"});
    EXPECT_EQ(output, "-P OUTPUT ACCEPT\n" + render_jump(qemu_.uid) + "\n") << tool;
    const auto chain = run_ok({tool, "-w", "-S", std::string(k_egress_chain)});
    std::size_t rules = 0;
    for (std::size_t p = chain.find("\n-A "); p != std::string::npos;
         p = chain.find("\n-A ", p + 1)) {
      ++rules;
    }
    const auto family = std::string(tool) == "iptables" ? ip_family::v4 : ip_family::v6;
    EXPECT_EQ(rules, render_chain(fw.current_policy(), family).size()) << chain;
  }
}

check_result isolation_of(libvirt_driver& driver) {
  for (auto& c : driver.doctor()) {
    if (c.name == "guest_isolation") {
      return c;
    }
  }
  ADD_FAILURE() << "no guest_isolation check";
  return {};
}

TEST_F(EgressFirewallInPrivateNetns, DoctorFailsWithAHintOnAnAcceptAboveTheJumpAndCreateReasserts) {
  libvirt_config cfg;
  cfg.uri = "test:///default";
  cfg.accel = "tcg";
  cfg.state_dir = dir_ / "state";
  cfg.qemu_conf = dir_ / "qemu.conf";
  // Long enough that only create_vm can be what repairs the rules below.
  cfg.firewall_interval = std::chrono::hours(1);
  fixed_base_image images(dir_ / "no-such-disk.qcow2");
  libvirt_driver driver(cfg, images);

  const auto good = isolation_of(driver);
  EXPECT_TRUE(good.ok) << good.detail;
  EXPECT_NE(good.detail.find("uid " + std::to_string(qemu_.uid)), std::string::npos) << good.detail;

  run_ok({"ip6tables", "-w", "-I", "OUTPUT", "1", "-j", "ACCEPT"});
  const auto broken = isolation_of(driver);
  EXPECT_FALSE(broken.ok);
  EXPECT_NE(broken.detail.find("IPv6"), std::string::npos) << broken.detail;
  EXPECT_FALSE(broken.hint.empty());

  vm_spec spec;
  spec.host_id = "01a233b5-76c7-7d83-bea0-0e862f1d1cc5";
  spec.name = "sb-0e862f1d1cc5";
  spec.image_digest = "sha256:00";
  const auto created = driver.create_vm(spec);
  ASSERT_FALSE(created) << "there is no base disk";
  EXPECT_EQ(created.error().code, make_error_code(errc::vm_create_failed));
  const auto repaired = isolation_of(driver);
  EXPECT_TRUE(repaired.ok) << repaired.detail;
}

TEST_F(EgressFirewallInPrivateNetns, DriverPutsTheRulesBackOnItsOwnAfterOutputIsFlushed) {
  libvirt_config cfg;
  cfg.uri = "test:///default";
  cfg.accel = "tcg";
  cfg.state_dir = dir_ / "state";
  cfg.qemu_conf = dir_ / "qemu.conf";
  cfg.firewall_interval = 100ms;
  fixed_base_image images(dir_ / "no-such-disk.qcow2");
  const libvirt_driver driver(cfg, images);
  auto observer = firewall();
  ASSERT_TRUE(observer.inspect({qemu_.uid}).ok);
  run_ok({"iptables", "-w", "-F", "OUTPUT"});
  ASSERT_FALSE(observer.inspect({qemu_.uid}).ok);
  // Polling, not timing: the driver's own thread must repair this within a few intervals.
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  bool repaired = false;
  while (!repaired && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
    repaired = observer.inspect({qemu_.uid}).ok;
  }
  EXPECT_TRUE(repaired) << "the jump did not come back";
  EXPECT_EQ(probe_local_connect(ip_family::v4, qemu_.uid, qemu_.gid, 1000ms),
            probe_outcome::refused);
}

TEST_F(EgressFirewallInPrivateNetns, DriverRefusesToStartWhenQemuConfRunsQemuAsRoot) {
  std::ofstream(dir_ / "qemu.conf") << "# user = \"libvirt-qemu\"\nuser = \"root\"\n";
  libvirt_config cfg;
  cfg.uri = "test:///default";
  cfg.accel = "tcg";
  cfg.state_dir = dir_ / "state";
  cfg.qemu_conf = dir_ / "qemu.conf";
  fixed_base_image images(dir_ / "no-such-disk.qcow2");
  try {
    libvirt_driver driver(cfg, images);
    ADD_FAILURE() << "a driver whose guests would run as root started";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("QEMU runs as root"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("qemu.conf"), std::string::npos) << e.what();
  }
  EXPECT_EQ(run_ok({"iptables", "-w", "-S", "OUTPUT"}), "-P OUTPUT ACCEPT\n")
      << "no rule may match root";
}

}  // namespace
}  // namespace litterbox::hypervisor
