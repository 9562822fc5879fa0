#include "hypervisor/libvirt/libvirt_driver.hpp"

#include "hypervisor/errc.hpp"
#include "hypervisor/libvirt/forward_port.hpp"
#include "hypervisor/libvirt/proxy_link.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace litterbox::hypervisor {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

/// What a wedged libvirtd looks like to a client: a unix socket that takes connections (the
/// kernel completes them into the backlog) and never answers a byte.
class hung_libvirtd {
 public:
  hung_libvirtd() {
    std::string tmpl = (fs::temp_directory_path() / "lb-hung-libvirtd-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      throw std::runtime_error("mkdtemp failed");
    }
    dir_ = tmpl;
    const auto path = (dir_ / "sock").string();
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path.copy(addr.sun_path, sizeof addr.sun_path - 1);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(fd_, 64) != 0) {
      throw std::runtime_error("cannot listen on " + path);
    }
    uri_ = "qemu+unix:///system?socket=" + path;
  }
  ~hung_libvirtd() {
    ::close(fd_);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  hung_libvirtd(const hung_libvirtd&) = delete;
  hung_libvirtd& operator=(const hung_libvirtd&) = delete;
  const std::string& uri() const { return uri_; }

 private:
  fs::path dir_;
  int fd_ = -1;
  std::string uri_;
};

/// Runs `fn` on a thread of its own and waits at most `bound`: a call that hangs fails the
/// test instead of hanging it (the thread is then abandoned with what it shares).
bool finishes_within(std::chrono::milliseconds bound, std::function<void()> fn) {
  struct state {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
  };
  auto s = std::make_shared<state>();
  std::thread([s, fn = std::move(fn)] {
    fn();
    const std::lock_guard lock(s->m);
    s->done = true;
    s->cv.notify_all();
  }).detach();
  std::unique_lock lock(s->m);
  return s->cv.wait_for(lock, bound, [&] { return s->done; });
}

struct fixture_state {
  hung_libvirtd libvirtd;
  fs::path state_dir;
  fixed_base_image images{"/nonexistent/base.qcow2"};
  std::unique_ptr<libvirt_driver> driver;
};

TEST(LibvirtDriverHungDaemon, CallsFailWithinTheConnectTimeoutAndDoNotQueueBehindEachOther) {
  auto s = std::make_shared<fixture_state>();
  s->state_dir = fs::temp_directory_path() / ("lb-libvirt-test-" + std::to_string(::getpid()));
  fs::create_directories(s->state_dir);
  libvirt_config cfg;
  cfg.uri = s->libvirtd.uri();
  cfg.accel = "tcg";
  cfg.state_dir = s->state_dir;
  cfg.isolate_host = false;
  cfg.connect_timeout = 1000ms;
  cfg.links = std::make_shared<fake_proxy_links>();  // no namespace on the test machine
  cfg.check_timeout = 1500ms;

  auto started = steady::now();
  ASSERT_TRUE(finishes_within(15s, [s, cfg] {
    s->driver = std::make_unique<libvirt_driver>(cfg, s->images);
  })) << "constructing the driver hung on the wedged libvirtd";
  EXPECT_LT(steady::now() - started, 5s);

  // Four calls at once: each gives up after its own connect timeout; none waits for the
  // others (one mutex held across the open made them queue, each waiting for ever).
  constexpr std::size_t k_calls = 4;
  std::vector<std::optional<result<std::vector<std::string>>>> outcomes(k_calls);
  started = steady::now();
  ASSERT_TRUE(finishes_within(15s, [s, &outcomes] {
    std::vector<std::thread> callers;
    for (std::size_t i = 0; i < k_calls; ++i) {
      callers.emplace_back([s, &outcomes, i] { outcomes[i].emplace(s->driver->list_owned()); });
    }
    for (auto& t : callers) {
      t.join();
    }
  })) << "list_owned hung on the wedged libvirtd";
  EXPECT_LT(steady::now() - started, 4s);
  for (const auto& o : outcomes) {
    ASSERT_TRUE(o.has_value());
    ASSERT_FALSE(o->has_value());
    EXPECT_EQ(o->error().code, errc::unavailable);
    EXPECT_NE(o->error().message.find("did not answer"), std::string::npos) << o->error().message;
  }

  std::vector<check_result> report;
  started = steady::now();
  ASSERT_TRUE(finishes_within(15s, [s, &report] { report = s->driver->doctor(); }))
      << "doctor hung on the wedged libvirtd";
  EXPECT_LT(steady::now() - started, 5s);
  ASSERT_FALSE(report.empty());
  EXPECT_EQ(report.front().name, "libvirt");
  EXPECT_FALSE(report.front().ok);

  // The driver goes away while its open is still stuck: the abandoned open thread owns
  // everything it touches.
  s->driver.reset();
  std::error_code ec;
  fs::remove_all(s->state_dir, ec);
}

/// A driver on libvirt's in-process test driver whose proxy links are `links`, checking and
/// re-asserting every `interval`.
libvirt_config test_libvirt_config(const fs::path& dir, std::shared_ptr<fake_proxy_links> links,
                                   std::chrono::milliseconds interval) {
  libvirt_config cfg;
  cfg.uri = "test:///default";
  cfg.accel = "tcg";
  cfg.state_dir = dir;
  cfg.isolate_host = false;
  cfg.start_paused = false;
  cfg.links = std::move(links);
  cfg.firewall_interval = interval;
  return cfg;
}

std::unique_ptr<libvirt_driver> driver_on_test_libvirt(const fs::path& dir,
                                                       std::shared_ptr<fake_proxy_links> links,
                                                       std::chrono::milliseconds interval,
                                                       base_images& images) {
  return std::make_unique<libvirt_driver>(test_libvirt_config(dir, std::move(links), interval),
                                          images);
}

std::optional<check_result> find_check(const std::vector<check_result>& report,
                                       std::string_view name) {
  for (const auto& c : report) {
    if (c.name == name) {
      return c;
    }
  }
  return std::nullopt;
}

TEST(LibvirtDriverProxyNamespace, DoctorReportsABrokenProxyNamespaceWithAHintNamingIt) {
  const fs::path dir = fs::temp_directory_path() / ("lb-proxy-ns-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fixed_base_image images{"/nonexistent/base.qcow2"};
  auto links = std::make_shared<fake_proxy_links>();
  auto driver = driver_on_test_libvirt(dir, links, 1h, images);  // no repair during the test

  auto check = find_check(driver->doctor(), "guest_proxy");
  ASSERT_TRUE(check);
  EXPECT_TRUE(check->ok) << check->detail;
  EXPECT_TRUE(check->hint.empty());

  links->break_namespace();
  check = find_check(driver->doctor(), "guest_proxy");
  ASSERT_TRUE(check);
  EXPECT_FALSE(check->ok);
  EXPECT_EQ(check->detail, "the fake proxy namespace was broken");
  EXPECT_NE(check->hint.find("ip netns exec litterbox-gp nft list ruleset"), std::string::npos)
      << check->hint;
  driver.reset();
  std::error_code ec;
  fs::remove_all(dir, ec);
}

TEST(LibvirtDriverSshPorts, DoctorFailsARangeOfEphemeralPortsWithAHintAndPassesOneBelowThem) {
  std::ifstream sysctl("/proc/sys/net/ipv4/ip_local_port_range");
  int first = 0;
  int last = 0;
  ASSERT_TRUE(sysctl >> first >> last) << "Linux keeps it in /proc";
  ASSERT_GT(first, 200);
  const fs::path dir = fs::temp_directory_path() / ("lb-ssh-ports-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fixed_base_image images{"/nonexistent/base.qcow2"};
  auto cfg = test_libvirt_config(dir, std::make_shared<fake_proxy_links>(), 1h);

  cfg.ssh_port_min = first - 100;
  cfg.ssh_port_max = first - 91;
  auto below = find_check(libvirt_driver(cfg, images).doctor(), "ssh_ports");
  ASSERT_TRUE(below);
  EXPECT_TRUE(below->ok) << below->detail;

  cfg.ssh_port_min = first;
  cfg.ssh_port_max = first + 9;
  const auto expected = ephemeral_ports_within(first, first + 9).value();
  auto inside = find_check(libvirt_driver(cfg, images).doctor(), "ssh_ports");
  ASSERT_TRUE(inside);
  EXPECT_EQ(inside->ok, expected == 0);
  if (expected != 0) {
    EXPECT_EQ(inside->detail.rfind(std::to_string(expected) + " of the SSH ports ", 0), 0U)
        << inside->detail;
    EXPECT_NE(inside->hint.find("net.ipv4.ip_local_reserved_ports"), std::string::npos);
  }

  cfg.ssh_port_min = 1;
  cfg.ssh_port_max = 0;
  EXPECT_FALSE(find_check(libvirt_driver(cfg, images).doctor(), "ssh_ports"))
      << "no range configured, no check";
  std::error_code ec;
  fs::remove_all(dir, ec);
}

TEST(LibvirtDriverProxyNamespace, TheDriverPreparesABrokenProxyNamespaceAgainOnItsOwn) {
  const fs::path dir =
      fs::temp_directory_path() / ("lb-proxy-ns-repair-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fixed_base_image images{"/nonexistent/base.qcow2"};
  auto links = std::make_shared<fake_proxy_links>();
  auto driver = driver_on_test_libvirt(dir, links, 20ms, images);
  const auto prepares = [&links] {
    const auto calls = links->calls();
    return std::count(calls.begin(), calls.end(), "prepare");
  };
  // A healthy namespace is left alone: three ticks inspect it and none prepares it again.
  const auto ticked = steady::now() + 10s;
  while (links->inspections() < 3 && steady::now() < ticked) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_GE(links->inspections(), 3);
  EXPECT_EQ(prepares(), 1);

  links->break_namespace();
  const auto deadline = steady::now() + 10s;
  while (prepares() < 2 && steady::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(prepares(), 2);
  EXPECT_TRUE(links->inspect().ok);
  driver.reset();
  std::error_code ec;
  fs::remove_all(dir, ec);
}

}  // namespace
}  // namespace litterbox::hypervisor
