#include "hypervisor/errc.hpp"
#include "hypervisor/libvirt/libvirt_driver.hpp"
#include "hypervisor/ssh/keys.hpp"
#include "tests/e2e/libvirt/guest_fixture.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace litterbox::hypervisor {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Values that break anything that pastes instead of encoding: shell, YAML, templates.
const std::map<std::string, std::string> k_hostile_env{
    {"SHELL_INJECTION", "'; touch /tmp/pwned #"},
    {"COMMAND_SUBST", "$(id)"},
    {"TEMPLATE", "{{ x }}"},
    {"CLOUD_CONFIG", "#cloud-config"},
    {"MIXED", "  a \"quoted\" 'single' \\back\\slash $HOME ${X} `id` tab\there  "},
    {"UNICODE", "grüße ✓ 😀"},
    {"EMPTY", ""},
};

struct loopback_listener {
  loopback_listener() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(fd, 8);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
  }
  ~loopback_listener() { ::close(fd); }
  loopback_listener(const loopback_listener&) = delete;
  loopback_listener& operator=(const loopback_listener&) = delete;
  // True if a connection is waiting to be accepted (checked without blocking).
  bool has_pending_connection() const {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
  }
  int fd = -1;
  int port = 0;
};

class LibvirtDriverE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path("/var/tmp/litterbox-e2e") / ("run-" + std::to_string(::getpid()));
    fs::create_directories(root_);
    fs::permissions(root_, fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
    images_ = std::make_unique<fixed_base_image>(e2e::base_disk());
    libvirt_config cfg;
    cfg.accel = "tcg";
    cfg.state_dir = root_ / "state";
    cfg.kernel = e2e::guest_kernel();
    cfg.initrd = e2e::guest_initrd();
    cfg.owner = "litterbox-e2e";
    cfg.guest_listeners = &sink_;
    cfg.proxy_netns = netns_;
    driver_ = std::make_unique<libvirt_driver>(cfg, *images_);
  }
  void TearDown() override {
    if (driver_) {
      for (const auto& id : spawned_) {
        (void)driver_->destroy(id);
      }
    }
    driver_.reset();
    (void)e2e::run({"ip", "netns", "del", netns_}, std::chrono::seconds(30));
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  // Whether `tap` is a link in the proxy namespace.
  bool tap_exists(const std::string& tap) {
    return e2e::run({"ip", "-n", netns_, "link", "show", "dev", tap}, std::chrono::seconds(30))
               .exit_code == 0;
  }

  vm_spec make_spec(std::string host_id, std::vector<std::string> keys) {
    vm_spec s;
    s.host_id = std::move(host_id);
    s.name = "sb-" + s.host_id.substr(s.host_id.size() - 12);
    s.image = "e2e";
    s.image_digest = driver_->prepare_image("e2e").value();
    s.cpus = 1;
    s.memory_mib = 1024;
    s.ssh_username = "agent";
    s.authorized_keys = std::move(keys);
    s.env = k_hostile_env;
    s.host_key = generate_ed25519("").value();
    s.ready_token = random_token();
    s.ssh_host = "127.0.0.1";
    s.ssh_port = e2e::free_loopback_port();
    spawned_.push_back(s.host_id);
    return s;
  }

  static std::string random_token() {
    std::string t;
    const char* hex = "0123456789abcdef";
    std::ifstream urandom("/dev/urandom", std::ios::binary);
    for (int i = 0; i < 32; ++i) {
      t += hex[static_cast<unsigned char>(urandom.get()) & 0x0FU];
    }
    return t;
  }

  // Runs `remote` through OpenSSH with strict host key checking against only `known_hosts`.
  e2e::command_result ssh(const vm_spec& s, const fs::path& key, const std::string& remote) {
    const fs::path kh = root_ / (s.host_id + ".known_hosts");
    e2e::write_private_file(
        kh, known_hosts_line(s.ssh_host, s.ssh_port, s.host_key.public_line) + "\n");
    return e2e::run(
        {"ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o",
         "UserKnownHostsFile=" + kh.string(), "-o", "GlobalKnownHostsFile=/dev/null", "-o",
         "ConnectTimeout=20", "-i", key.string(), "-p", std::to_string(s.ssh_port),
         s.ssh_username + "@" + s.ssh_host, remote},
        std::chrono::seconds(120));
  }

  fs::path root_;
  std::string netns_ = "lbgp-e2e-" + std::to_string(::getpid());
  e2e::proxy_sink sink_;  // outlives the driver, which hands it listeners
  std::unique_ptr<fixed_base_image> images_;
  std::unique_ptr<libvirt_driver> driver_;
  std::vector<std::string> spawned_;
};

// One boot serves every check: a boot costs about two minutes under TCG.
TEST_F(LibvirtDriverE2e, GuestBootsReadyWithPinnedKeyEnvSudoIsolationAndLeavesNothingBehind) {
  const auto user_key = generate_ed25519("e2e").value();
  const fs::path key_file = root_ / "id_ed25519";
  e2e::write_private_file(key_file, user_key.private_openssh);
  const auto spec = make_spec("0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b", {user_key.public_line});

  const auto started = std::chrono::steady_clock::now();
  const auto created = driver_->create_vm(spec);
  ASSERT_TRUE(created) << created.error().message;
  const auto ready = driver_->wait_ready(spec, std::chrono::steady_clock::now() + 420s);
  const auto boot_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  ASSERT_TRUE(ready) << ready.error().message;
  std::printf("create_vm + wait_ready: %.1f s\n", boot_s);

  {
    // Where boot time goes, for the record in the test log.
    const auto r =
        ssh(spec, key_file,
            "sudo -n systemd-analyze 2>&1; sudo -n systemd-analyze blame 2>&1 | head -n 8");
    std::printf("%s\n", r.output.c_str());
  }
  {
    SCOPED_TRACE("seed and disk are private and owned by QEMU's user");
    const auto dir = driver_->host_dir(spec.host_id);
    for (const auto* name : {"seed.iso", "disk.qcow2"}) {
      const auto perms = fs::status(dir / name).permissions();
      EXPECT_EQ(perms & (fs::perms::group_all | fs::perms::others_all), fs::perms::none) << name;
    }
  }
  {
    SCOPED_TRACE("OpenSSH logs in with only the pinned known_hosts line");
    const auto r = ssh(spec, key_file, "id -un; hostname; sudo -n true && echo sudo-ok");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("agent\n" + spec.name + "\nsudo-ok\n"), std::string::npos) << r.output;
  }
  {
    SCOPED_TRACE("env reaches a non-interactive session byte for byte");
    for (const auto& [k, v] : k_hostile_env) {
      const auto r = ssh(spec, key_file, "printf %s \"$" + k + "\"");
      EXPECT_EQ(r.exit_code, 0) << k << ": " << r.output;
      EXPECT_EQ(r.output, v) << k;
    }
    const auto pwned = ssh(spec, key_file, "test ! -e /tmp/pwned && echo clean");
    EXPECT_EQ(pwned.output, "clean\n");
  }
  {
    SCOPED_TRACE("env reaches an interactive login session too");
    const auto r = ssh(spec, key_file, "bash -lic 'printf %s \"$COMMAND_SUBST\"' 2>/dev/null");
    EXPECT_EQ(r.output, "$(id)");
  }
  {
    SCOPED_TRACE("the guest cannot open connections to host services or other forwards");
    const loopback_listener host_service;
    const auto control =
        ssh(spec, key_file, "timeout 5 bash -c 'echo > /dev/tcp/127.0.0.1/22' && echo open");
    EXPECT_EQ(control.output, "open\n") << "the probe itself must work inside the guest";
    for (const int port : {host_service.port, spec.ssh_port, 55432}) {
      const auto r = ssh(spec, key_file,
                         "timeout 5 bash -c 'echo > /dev/tcp/10.0.2.2/" + std::to_string(port) +
                             "' 2>/dev/null && echo open || echo closed");
      EXPECT_EQ(r.output, "closed\n") << "port " << port;
    }
    EXPECT_FALSE(host_service.has_pending_connection());
  }
  {
    SCOPED_TRACE("the first boot reaches proxy.litterbox.internal:80 on its own listener only");
    const std::string tap = proxy_tap_name(spec.host_id);
    EXPECT_TRUE(tap_exists(tap));
    EXPECT_TRUE(sink_.listening(spec.host_id));
    const auto r = ssh(spec, key_file, e2e::proxy_probe_command());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(r.output, "169.254.77.1\n" + spec.host_id + "\n81 closed\n");
    EXPECT_EQ(sink_.connections(spec.host_id), 1);
    // The user-mode NIC still carries everything else, by MAC whatever the enumeration.
    const auto links = ssh(spec, key_file,
                           "ip -o -4 addr show dev lbproxy0; ip -o -4 addr show dev lbnet0; "
                           "ip route show default; cat /sys/class/net/lbnet0/address");
    EXPECT_NE(links.output.find("inet 169.254.77.2/30"), std::string::npos) << links.output;
    EXPECT_NE(links.output.find("inet 10.0.2.15/24"), std::string::npos) << links.output;
    EXPECT_NE(links.output.find("default via 10.0.2.2 dev lbnet0"), std::string::npos)
        << links.output;
    EXPECT_NE(links.output.find("52:54:00:12:34:56"), std::string::npos) << links.output;
  }
  {
    SCOPED_TRACE("console, ownership and a pinned-key mismatch");
    const auto console = driver_->console(spec.host_id, 64 * 1024);
    ASSERT_TRUE(console);
    EXPECT_NE(console->find("litterbox-ready"), std::string::npos);
    const auto owned = driver_->list_owned();
    ASSERT_TRUE(owned);
    EXPECT_NE(std::find(owned->begin(), owned->end(), spec.host_id), owned->end());
    auto wrong = spec;
    wrong.host_key = generate_ed25519("").value();
    const auto mismatch = driver_->wait_ready(wrong, std::chrono::steady_clock::now() + 60s);
    ASSERT_FALSE(mismatch);
    EXPECT_EQ(mismatch.error().code, make_error_code(errc::host_key_mismatch));
  }
  {
    SCOPED_TRACE("destroy removes domain, files and the forward, and is idempotent");
    ASSERT_TRUE(driver_->destroy(spec.host_id));
    EXPECT_FALSE(fs::exists(driver_->host_dir(spec.host_id)));
    const auto owned = driver_->list_owned();
    ASSERT_TRUE(owned);
    EXPECT_EQ(std::find(owned->begin(), owned->end(), spec.host_id), owned->end());
    const auto dom = e2e::run({"virsh", "-c", "qemu:///system", "domstate", spec.name},
                              std::chrono::seconds(30));
    EXPECT_NE(dom.exit_code, 0) << dom.output;
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(spec.ssh_port));
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0)
        << "the SSH port is still held";
    ::close(fd);
    EXPECT_TRUE(driver_->destroy(spec.host_id));
    // The listener went with it (before the domain: destroy removes it first), and the tap.
    EXPECT_FALSE(sink_.listening(spec.host_id));
    ASSERT_FALSE(sink_.removed().empty());
    EXPECT_EQ(sink_.removed().front(), spec.host_id);
    EXPECT_FALSE(tap_exists(proxy_tap_name(spec.host_id)));
  }
}

TEST_F(LibvirtDriverE2e, DoctorReportsLibvirtTcgKernelDiskIsolationAndProxyNamespace) {
  const auto checks = driver_->doctor();
  std::map<std::string, check_result> by_name;
  for (const auto& c : checks) {
    by_name[c.name] = c;
  }
  for (const auto* name :
       {"libvirt", "accelerator", "guest_kernel", "disk", "guest_isolation", "guest_proxy"}) {
    ASSERT_TRUE(by_name.count(name)) << name;
    EXPECT_TRUE(by_name[name].ok) << name << ": " << by_name[name].detail;
  }
  EXPECT_NE(by_name["accelerator"].detail.find("tcg"), std::string::npos);
  EXPECT_NE(by_name["guest_proxy"].detail.find("only TCP to 169.254.77.1:80"), std::string::npos)
      << by_name["guest_proxy"].detail;
}

}  // namespace
}  // namespace litterbox::hypervisor
