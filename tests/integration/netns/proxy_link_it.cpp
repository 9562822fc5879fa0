#include "base/process.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/libvirt/proxy_link.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <cerrno>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace litterbox::hypervisor {
namespace {

using namespace std::chrono_literals;

bool run(const std::vector<std::string>& argv) {
  const auto r = run_process(argv, 10s);
  return r && !r->timed_out && r->exit_code == 0;
}

// What the gateway does with the listeners, minus the HTTP: keeps them, closes on removal.
class recording_sink final : public guest_listener_sink {
 public:
  ~recording_sink() override {
    for (const auto& [id, fd] : fds_) {
      ::close(fd);
    }
  }
  void add_listener(const std::string& host_id, int fd) override {
    const std::lock_guard lock(mutex_);
    if (auto it = fds_.find(host_id); it != fds_.end()) {
      ::close(it->second);
    }
    fds_[host_id] = fd;
  }
  void remove_listener(std::string_view host_id) override {
    const std::lock_guard lock(mutex_);
    if (auto it = fds_.find(std::string(host_id)); it != fds_.end()) {
      ::close(it->second);
      fds_.erase(it);
      removed_.emplace_back(host_id);
    }
  }
  int fd(const std::string& id) {
    const std::lock_guard lock(mutex_);
    auto it = fds_.find(id);
    return it == fds_.end() ? -1 : it->second;
  }
  std::vector<std::string> removed() {
    const std::lock_guard lock(mutex_);
    return removed_;
  }

 private:
  std::mutex mutex_;
  std::map<std::string, int> fds_;
  std::vector<std::string> removed_;
};

// Connects from inside namespace `ns` to 169.254.77.1:`port`, from `source` when given;
// the connected socket, or -1 (errno in *err) when the connection did not complete within
// `timeout`.
int connect_from(const std::string& ns, int port, const std::string& source,
                 std::chrono::milliseconds timeout, int* err = nullptr) {
  int fd = -1;
  int e = 0;
  std::thread([&] {
    const int nsfd = ::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (nsfd < 0 || ::setns(nsfd, CLONE_NEWNET) != 0) {
      e = errno;
      return;
    }
    ::close(nsfd);
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (!source.empty()) {
      sockaddr_in src{};
      src.sin_family = AF_INET;
      ::inet_pton(AF_INET, source.c_str(), &src.sin_addr);
      if (::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) {
        e = errno;
        ::close(fd);
        fd = -1;
        return;
      }
    }
    sockaddr_in dst{};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET, "169.254.77.1", &dst.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst) != 0 && errno != EINPROGRESS) {
      e = errno;
    } else {
      pollfd p{fd, POLLOUT, 0};
      socklen_t len = sizeof e;
      if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) {
        e = ETIMEDOUT;
      } else {
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len);
      }
    }
    if (e != 0) {
      ::close(fd);
      fd = -1;
    }
  }).join();
  if (err != nullptr) {
    *err = e;
  }
  return fd;
}

// The peer address of one connection waiting on `listener`, or "" when none is waiting.
std::string accept_one(int listener) {
  const int flags = ::fcntl(listener, F_GETFL);
  ::fcntl(listener, F_SETFL, flags | O_NONBLOCK);
  sockaddr_in peer{};
  socklen_t len = sizeof peer;
  const int c = ::accept(listener, reinterpret_cast<sockaddr*>(&peer), &len);
  ::fcntl(listener, F_SETFL, flags);
  if (c < 0) {
    return {};
  }
  ::close(c);
  char text[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &peer.sin_addr, text, sizeof text);
  return text;
}

// Two "guests" (namespaces of the test's own, 169.254.77.2/30 each) on veth pairs whose host
// ends stand in for the guests' taps, as in docs/design/guest-proxy.md's appendix.
class ProxyLinks : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) {
      GTEST_SKIP() << "needs root (network namespaces)";
    }
    const std::string tag = std::to_string(::getpid());
    proxy_ns_ = "lbgp-it-" + tag;
    for (int i = 0; i < 2; ++i) {
      guests_.push_back("lbgg" + std::to_string(i) + "-" + tag);
      char tap[16];
      std::snprintf(tap, sizeof tap, "lbp%07x%02d", static_cast<unsigned>(::getpid()) & 0xfffffffU,
                    i);
      taps_.emplace_back(tap);
      ids_.push_back("host-" + std::to_string(i));
    }
    for (std::size_t i = 0; i < 2; ++i) {
      ASSERT_TRUE(run({"ip", "netns", "add", guests_[i]}));
      ASSERT_TRUE(run({"ip", "link", "add", taps_[i], "type", "veth", "peer", "name", "eth0",
                       "netns", guests_[i]}));
      ASSERT_TRUE(run({"ip", "-n", guests_[i], "addr", "add", "169.254.77.2/30", "dev", "eth0"}));
      ASSERT_TRUE(run({"ip", "-n", guests_[i], "link", "set", "eth0", "up"}));
    }
    links_ = std::make_unique<netns_proxy_links>(proxy_ns_, &sink_);
    ASSERT_TRUE(links_->prepare());
  }
  void TearDown() override {
    for (const auto& t : taps_) {
      (void)run({"ip", "link", "del", t});
    }
    for (const auto& g : guests_) {
      (void)run({"ip", "netns", "del", g});
    }
    if (!proxy_ns_.empty()) {
      (void)run({"ip", "netns", "del", proxy_ns_});
    }
  }
  void adopt_both() {
    for (std::size_t i = 0; i < 2; ++i) {
      auto ok = links_->adopt(ids_[i], taps_[i], true);
      ASSERT_TRUE(ok) << ok.error().message;
      ASSERT_GE(sink_.fd(ids_[i]), 0);
    }
  }

  recording_sink sink_;
  std::string proxy_ns_;
  std::vector<std::string> guests_;
  std::vector<std::string> taps_;
  std::vector<std::string> ids_;
  std::unique_ptr<netns_proxy_links> links_;
};

TEST_F(ProxyLinks, EachGuestsConnectionArrivesOnItsOwnLinksListenerThoughAddressesAreEqual) {
  adopt_both();
  const auto listed = links_->taps();
  ASSERT_TRUE(listed);
  EXPECT_EQ(*listed, taps_);
  for (std::size_t i = 0; i < 2; ++i) {
    const int c = connect_from(guests_[i], 80, "", 5s);
    ASSERT_GE(c, 0) << guests_[i];
    // The handshake is complete: the connection waits on exactly one listener.
    EXPECT_EQ(accept_one(sink_.fd(ids_[i])), "169.254.77.2");
    EXPECT_EQ(accept_one(sink_.fd(ids_[1 - i])), "");
    ::close(c);
  }
}

TEST_F(ProxyLinks, AGuestThatSpoofsAnotherSourceAddressIsStillAttributedToItsLink) {
  adopt_both();
  ASSERT_TRUE(run({"ip", "-n", guests_[0], "addr", "add", "169.254.77.6/32", "dev", "eth0"}));
  const int c = connect_from(guests_[0], 80, "169.254.77.6", 5s);
  ASSERT_GE(c, 0);
  EXPECT_EQ(accept_one(sink_.fd(ids_[0])), "169.254.77.6");
  EXPECT_EQ(accept_one(sink_.fd(ids_[1])), "");
  ::close(c);
}

TEST_F(ProxyLinks, AnotherPortOnTheProxyAddressIsUnreachable) {
  adopt_both();
  // Something listens on 81 on the link too: only the filter stands between it and the guest.
  auto extra = links_->open_listener(taps_[0], 81);
  ASSERT_TRUE(extra) << extra.error().message;
  int err = 0;
  const int c = connect_from(guests_[0], 81, "", 1s, &err);
  EXPECT_LT(c, 0);
  EXPECT_TRUE(err == ETIMEDOUT || err == ECONNREFUSED || err == EHOSTUNREACH) << err;
  EXPECT_EQ(accept_one(*extra), "");
  ::close(*extra);
  const auto r = run_process(
      {"ip", "netns", "exec", proxy_ns_, "nft", "list", "table", "inet", "litterbox_proxy"}, 10s);
  ASSERT_TRUE(r);
  EXPECT_NE(r->out.find("policy drop"), std::string::npos) << r->out;
  const auto v6 = run_process({"ip", "netns", "exec", proxy_ns_, "sysctl", "-n",
                               "net.ipv6.conf." + taps_[0] + ".disable_ipv6"},
                              10s);
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->out, "1\n");
}

TEST_F(ProxyLinks, AFlushedFilterForwardingOnOrAnAddedTableIsCaughtByInspectAndPrepareRepairs) {
  adopt_both();
  const auto healthy = links_->inspect();
  EXPECT_TRUE(healthy.ok) << healthy.detail;
  EXPECT_NE(healthy.detail.find("2 guest links"), std::string::npos) << healthy.detail;
  auto extra = links_->open_listener(taps_[0], 81);
  ASSERT_TRUE(extra) << extra.error().message;
  const std::vector<std::vector<std::string>> breakages = {
      {"ip", "netns", "exec", proxy_ns_, "nft", "flush", "ruleset"},
      {"ip", "netns", "exec", proxy_ns_, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"},
      {"ip", "netns", "exec", proxy_ns_, "nft",
       "add table ip intruder; add chain ip intruder in { type filter hook input priority -10; "
       "policy accept; }; add rule ip intruder in tcp dport 81 accept"},
  };
  for (const auto& breakage : breakages) {
    SCOPED_TRACE(breakage.back());
    ASSERT_TRUE(run(breakage));
    const auto broken = links_->inspect();
    EXPECT_FALSE(broken.ok) << broken.detail;
    EXPECT_FALSE(broken.detail.empty());
    ASSERT_TRUE(links_->prepare());
    const auto repaired = links_->inspect();
    EXPECT_TRUE(repaired.ok) << repaired.detail;
    // Repaired means in force: port 81 is unreachable from the guest again, and nothing
    // but litterbox's table is left (the namespace's whole ruleset is litterbox's).
    const auto tables =
        run_process({"ip", "netns", "exec", proxy_ns_, "nft", "list", "tables"}, 10s);
    ASSERT_TRUE(tables);
    EXPECT_EQ(tables->out, "table inet litterbox_proxy\n");
    int err = 0;
    const int c = connect_from(guests_[0], 81, "", 1s, &err);
    EXPECT_LT(c, 0) << "port 81 reachable after the repair";
    if (c >= 0) {
      ::close(c);
    }
  }
  ::close(*extra);
}

TEST_F(ProxyLinks, RemovingALinkClosesItsListenerAndDeletesTheTapButLeavesTheOther) {
  adopt_both();
  ASSERT_TRUE(links_->remove(ids_[0], taps_[0]));
  EXPECT_EQ(sink_.removed(), std::vector<std::string>{ids_[0]});
  EXPECT_EQ(sink_.fd(ids_[0]), -1);
  const auto listed = links_->taps();
  ASSERT_TRUE(listed);
  EXPECT_EQ(*listed, std::vector<std::string>{taps_[1]});
  EXPECT_LT(connect_from(guests_[0], 80, "", 1s), 0);
  const int c = connect_from(guests_[1], 80, "", 5s);
  ASSERT_GE(c, 0);
  EXPECT_EQ(accept_one(sink_.fd(ids_[1])), "169.254.77.2");
  ::close(c);
  // Removing what is gone already is fine.
  EXPECT_TRUE(links_->remove(ids_[0], taps_[0]));
}

TEST_F(ProxyLinks, ATapAlreadyInTheNamespaceIsReadoptedWithAFreshListener) {
  adopt_both();
  ASSERT_TRUE(links_->prepare());  // a restart
  auto again = links_->adopt(ids_[0], taps_[0], true);
  ASSERT_TRUE(again) << again.error().message;
  const int c = connect_from(guests_[0], 80, "", 5s);
  ASSERT_GE(c, 0);
  EXPECT_EQ(accept_one(sink_.fd(ids_[0])), "169.254.77.2");
  ::close(c);
}

TEST_F(ProxyLinks, AGoneGuestsListenerIsDroppedOnlyWhileNoNewerAdoptReplacedIt) {
  adopt_both();
  const auto first = links_->listening();
  ASSERT_EQ(first.size(), 2U);
  // Host 0 is adopted again (its guest re-created) after a caller took its snapshot: the
  // stale generation leaves the new listener alone.
  ASSERT_TRUE(links_->adopt(ids_[0], taps_[0], true));
  links_->drop_listener(ids_[0], first.at(ids_[0]));
  EXPECT_GE(sink_.fd(ids_[0]), 0);
  EXPECT_EQ(sink_.removed(), std::vector<std::string>{ids_[0]});  // by the re-adopt only
  // Host 1's guest is gone: its listener goes, its tap is left to whoever deletes it.
  links_->drop_listener(ids_[1], first.at(ids_[1]));
  EXPECT_EQ(sink_.fd(ids_[1]), -1);
  EXPECT_EQ(links_->listening().count(ids_[1]), 0U);
  const auto listed = links_->taps();
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->size(), 2U);
}

TEST_F(ProxyLinks, AdoptingATapThatDoesNotExistFailsAsVmCreateFailed) {
  const auto r = links_->adopt("host-x", "lbpnosuchtap00", true);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::vm_create_failed);
  EXPECT_EQ(sink_.fd("host-x"), -1);
}

}  // namespace
}  // namespace litterbox::hypervisor
