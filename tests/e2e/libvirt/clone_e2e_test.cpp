#include "base/secret.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/libvirt/libvirt_driver.hpp"
#include "hypervisor/libvirt/save_image.hpp"
#include "hypervisor/ssh/keys.hpp"
#include "tests/e2e/libvirt/guest_fixture.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <stdexcept>
#include <unistd.h>

namespace litterbox::hypervisor {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using std::chrono::steady_clock;

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

double seconds_since(steady_clock::time_point t) {
  return std::chrono::duration<double>(steady_clock::now() - t).count();
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string uuid_like(int n) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "0190a3b4-5c6d-7e8f-9a0b-%012d", n);
  return buf;
}

// A template built once per test; clones are restored from it a few at a time (2 cores).
class CloneE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path("/var/tmp/litterbox-e2e") / ("clone-run-" + std::to_string(::getpid()));
    fs::create_directories(root_);
    fs::permissions(root_, fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
    images_ = std::make_unique<fixed_base_image>(base_disk());
    libvirt_config cfg;
    cfg.accel = "tcg";
    cfg.state_dir = root_ / "state";
    cfg.kernel = e2e::guest_kernel();
    cfg.initrd = e2e::guest_initrd();
    cfg.owner = "litterbox-e2e-clone";
    cfg.agent_connect_timeout = agent_bound();
    cfg.guest_listeners = &sink_;
    cfg.proxy_netns = netns_;
    driver_ = std::make_unique<libvirt_driver>(cfg, *images_);
    digest_ = driver_->prepare_image("e2e").value();
  }
  void TearDown() override {
    if (driver_) {
      for (const auto& id : spawned_) {
        (void)driver_->destroy(id);
      }
      for (const auto& id : templates_) {
        (void)driver_->destroy_template(id);
      }
    }
    driver_.reset();
    (void)e2e::run({"ip", "netns", "del", netns_}, std::chrono::seconds(30));
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  virtual fs::path base_disk() { return e2e::base_disk(); }
  virtual std::chrono::milliseconds agent_bound() { return 60s; }

  vm_spec make_spec(std::string host_id, std::vector<std::string> keys) {
    vm_spec s;
    s.host_id = std::move(host_id);
    s.name = "sb-" + s.host_id.substr(s.host_id.size() - 12);
    s.image = "e2e";
    s.image_digest = digest_;
    s.cpus = 1;
    s.memory_mib = 1024;
    s.ssh_username = "agent";
    s.authorized_keys = std::move(keys);
    s.host_key = generate_ed25519("").value();
    s.ready_token = random_hex(16);
    s.ssh_host = "127.0.0.1";
    s.ssh_port = e2e::free_loopback_port();
    return s;
  }

  template_spec make_template(const std::string& id) {
    template_spec t;
    t.template_id = id;
    t.guest = make_spec(id, {});
    t.guest.name = "lbt-" + id.substr(id.size() - 12);
    templates_.push_back(id);
    return t;
  }

  // Runs `remote` through OpenSSH with strict host key checking against only the known_hosts
  // line of `pinned` (by default the host's own) for s's address.
  e2e::command_result ssh(const vm_spec& s, const fs::path& key, const std::string& remote,
                          const std::string* pinned = nullptr) {
    const fs::path kh = root_ / (s.host_id + ".known_hosts");
    e2e::write_private_file(kh,
                            known_hosts_line(s.ssh_host, s.ssh_port,
                                             pinned != nullptr ? *pinned : s.host_key.public_line) +
                                "\n");
    return e2e::run({"ssh",
                     "-F",
                     "/dev/null",
                     "-o",
                     "BatchMode=yes",
                     "-o",
                     "StrictHostKeyChecking=yes",
                     "-o",
                     "UserKnownHostsFile=" + kh.string(),
                     "-o",
                     "GlobalKnownHostsFile=/dev/null",
                     "-o",
                     "ConnectTimeout=30",
                     "-o",
                     "IdentitiesOnly=yes",
                     "-i",
                     key.string(),
                     "-p",
                     std::to_string(s.ssh_port),
                     s.ssh_username + "@" + s.ssh_host,
                     remote});
  }

  fs::path key_file(const std::string& name, const ssh_key_pair& key) {
    const fs::path p = root_ / (name + ".key");
    e2e::write_private_file(p, key.private_openssh);
    return p;
  }

  // Whether `tap` is a link in the proxy namespace.
  bool tap_exists(const std::string& tap) {
    return e2e::run({"ip", "-n", netns_, "link", "show", "dev", tap}, std::chrono::seconds(30))
               .exit_code == 0;
  }

  fs::path root_;
  std::string netns_ = "lbgp-e2e-c" + std::to_string(::getpid());
  e2e::proxy_sink sink_;  // outlives the driver, which hands it listeners
  std::unique_ptr<fixed_base_image> images_;
  std::unique_ptr<libvirt_driver> driver_;
  std::string digest_;
  std::vector<std::string> spawned_;
  std::vector<std::string> templates_;
};

struct clone_facts {
  vm_spec spec;
  fs::path key;
  std::string urandom;
  std::string hostname;
  std::string machine_id;
  double clock_skew = 0;
};

// One template serves every check: building it is a cold boot (minutes under TCG).
TEST_F(CloneE2e, TenClonesOfOneTemplateShareNoIdentityAndEachServesOnlyItsOwnLogin) {
  const auto tmpl = make_template(uuid_like(900));
  auto started = steady_clock::now();
  const auto built = driver_->build_template(tmpl, steady_clock::now() + 600s);
  ASSERT_TRUE(built) << built.error().message;
  std::printf(
      "build_template: %.1f s, state file %.1f MiB\n", seconds_since(started),
      static_cast<double>(fs::file_size(driver_->template_dir(tmpl.template_id) / "state.sav")) /
          1048576.0);
  const fs::path tdir = driver_->template_dir(tmpl.template_id);
  {
    // For the record: the domain XML libvirt saved, which every clone's is derived from.
    const auto head = read_save_head(tdir / "state.sav");
    ASSERT_TRUE(head) << head.error().message;
    std::printf("saved domain XML:\n%s\n", head->xml.c_str());
  }
  {
    SCOPED_TRACE("the template is listed, its disk frozen, and it is no host");
    const auto listed = driver_->list_templates();
    ASSERT_TRUE(listed);
    EXPECT_EQ(*listed, std::vector<std::string>{tmpl.template_id});
    const auto perms =
        fs::status(driver_->template_dir(tmpl.template_id) / "disk.qcow2").permissions();
    EXPECT_EQ(perms & (fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write),
              fs::perms::none);
    const auto owned = driver_->list_owned();
    ASSERT_TRUE(owned);
    EXPECT_TRUE(owned->empty());
    // The seed held the template guest's throwaway host key and ready token.
    std::ifstream seed(tdir / "seed.iso", std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(seed)),
                            std::istreambuf_iterator<char>());
    EXPECT_FALSE(bytes.empty());
    EXPECT_EQ(bytes.find_first_not_of('\0'), std::string::npos);
  }
  const auto disk_before = e2e::run({"sha256sum", (tdir / "disk.qcow2").string()});

  constexpr int k_clones = 10;
  constexpr int k_at_once = 5;
  std::vector<clone_facts> facts;
  for (int batch = 0; batch < k_clones / k_at_once; ++batch) {
    std::vector<clone_facts> live;
    for (int i = 0; i < k_at_once; ++i) {
      const auto login = generate_ed25519("clone").value();
      clone_facts f;
      f.spec = make_spec(uuid_like(batch * k_at_once + i + 1), {login.public_line});
      f.key = key_file(f.spec.host_id, login);
      spawned_.push_back(f.spec.host_id);
      started = steady_clock::now();
      const auto restored =
          driver_->restore_clone(tmpl.template_id, f.spec, steady_clock::now() + 120s);
      ASSERT_TRUE(restored) << restored.error().message;
      std::printf("restore_clone %s: %.2f s\n", f.spec.name.c_str(), seconds_since(started));
      // First thing after ready: 32 bytes of the kernel's randomness; then the clock, the
      // hostname and the machine-id.
      const double before = unix_now();
      const auto r = ssh(f.spec, f.key,
                         "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; "
                         "date +%s.%N; hostname; cat /etc/machine-id");
      const double after = unix_now();
      ASSERT_EQ(r.exit_code, 0) << r.output;
      std::vector<std::string> lines;
      for (std::size_t at = 0; at < r.output.size();) {
        const auto eol = r.output.find('\n', at);
        lines.push_back(r.output.substr(at, eol - at));
        at = eol == std::string::npos ? r.output.size() : eol + 1;
      }
      ASSERT_EQ(lines.size(), 4U) << r.output;
      f.urandom = lines[0];
      EXPECT_EQ(f.urandom.size(), 64U) << f.urandom;
      const double guest = std::stod(lines[1]);
      f.clock_skew = guest < before ? before - guest : (guest > after ? guest - after : 0.0);
      EXPECT_LT(f.clock_skew, 2.0) << f.spec.name;
      f.hostname = lines[2];
      EXPECT_EQ(f.hostname, f.spec.name);
      f.machine_id = lines[3];
      EXPECT_EQ(f.machine_id.size(), 32U);
      EXPECT_FALSE(fs::exists(driver_->host_dir(f.spec.host_id) / "restore.fifo"));
      live.push_back(std::move(f));
    }
    {
      SCOPED_TRACE("no clone accepts another's login key, nor presents the first one's host key");
      const clone_facts& first = facts.empty() ? live.front() : facts.front();
      for (std::size_t i = 0; i < live.size(); ++i) {
        const auto& me = live[i];
        const auto& next = live[(i + 1) % live.size()];
        const auto wrong_key = ssh(me.spec, next.key, "true");
        EXPECT_NE(wrong_key.exit_code, 0)
            << me.spec.name << " let " << next.spec.name << "'s key in";
        EXPECT_NE(wrong_key.output.find("Permission denied"), std::string::npos)
            << wrong_key.output;
        if (me.spec.host_id != first.spec.host_id) {
          // The first clone's known_hosts entry, pointed at this clone: strict checking refuses.
          const auto r = ssh(me.spec, me.key, "true", &first.spec.host_key.public_line);
          EXPECT_NE(r.exit_code, 0) << me.spec.name << " presented " << first.spec.name << "'s key";
          EXPECT_NE(r.output.find("REMOTE HOST IDENTIFICATION HAS CHANGED"), std::string::npos)
              << r.output;
        }
      }
    }
    {
      SCOPED_TRACE("each clone's proxy connection arrives on its own listener only");
      for (const auto& me : live) {
        EXPECT_TRUE(tap_exists(proxy_tap_name(me.spec.host_id)));
        const auto r = ssh(me.spec, me.key, e2e::proxy_probe_command());
        ASSERT_EQ(r.exit_code, 0) << r.output;
        EXPECT_EQ(r.output, "169.254.77.1\n" + me.spec.host_id + "\n81 closed\n");
      }
      for (const auto& me : live) {
        EXPECT_EQ(sink_.connections(me.spec.host_id), 1) << me.spec.name;
      }
      EXPECT_EQ(sink_.connections(tmpl.template_id), 0);
      EXPECT_FALSE(sink_.listening(tmpl.template_id));
    }
    for (auto& f : live) {
      ASSERT_TRUE(driver_->destroy(f.spec.host_id));
      EXPECT_FALSE(sink_.listening(f.spec.host_id));
      EXPECT_FALSE(tap_exists(proxy_tap_name(f.spec.host_id)));
      facts.push_back(std::move(f));
    }
  }
  std::set<std::string> keys;
  std::set<std::string> randoms;
  std::set<std::string> names;
  std::set<std::string> machine_ids;
  for (const auto& f : facts) {
    keys.insert(f.spec.host_key.public_line);
    randoms.insert(f.urandom);
    names.insert(f.hostname);
    machine_ids.insert(f.machine_id);
  }
  EXPECT_EQ(keys.size(), facts.size());
  EXPECT_EQ(randoms.size(), facts.size());
  EXPECT_EQ(names.size(), facts.size());
  EXPECT_EQ(machine_ids.size(), facts.size());
  std::printf("clock skew of the clones:");
  for (const auto& f : facts) {
    std::printf(" %.2f", f.clock_skew);
  }
  std::printf(" s\n");

  {
    SCOPED_TRACE("a clone restored without login gets one, byte-exact, from apply_login");
    auto pool = make_spec(uuid_like(50), {});
    spawned_.push_back(pool.host_id);
    ASSERT_TRUE(driver_->restore_clone(tmpl.template_id, pool, steady_clock::now() + 120s));
    const auto login = generate_ed25519("caller").value();
    const auto key = key_file("caller", login);
    const auto before_login = ssh(pool, key, "true");
    EXPECT_NE(before_login.exit_code, 0) << "a clone without login let a key in";
    pool.authorized_keys = {login.public_line};
    pool.env = k_hostile_env;
    started = steady_clock::now();
    const auto applied = driver_->apply_login(pool, steady_clock::now() + 60s);
    ASSERT_TRUE(applied) << applied.error().message;
    std::printf("apply_login: %.0f ms\n", seconds_since(started) * 1000);
    for (const auto& [k, v] : k_hostile_env) {
      const auto r = ssh(pool, key, "printf %s \"$" + k + "\"");
      EXPECT_EQ(r.exit_code, 0) << k << ": " << r.output;
      EXPECT_EQ(r.output, v) << k;
    }
    EXPECT_EQ(ssh(pool, key, "test ! -e /tmp/pwned && echo clean").output, "clean\n");

    SCOPED_TRACE("apply_login ends with a handshake that must present the clone's host key");
    auto wrong_key = pool;
    wrong_key.host_key = generate_ed25519("not-the-clone").value();
    const auto mismatch = driver_->apply_login(wrong_key, steady_clock::now() + 30s);
    ASSERT_FALSE(mismatch);
    EXPECT_EQ(mismatch.error().code, errc::host_key_mismatch) << mismatch.error().message;

    SCOPED_TRACE("the guest agent refuses every RPC the driver does not use");
    for (const auto* cmd : {R"({"execute":"guest-get-time"})",
                            R"({"execute":"guest-file-read","arguments":{"handle":1}})",
                            R"({"execute":"guest-shutdown"})"}) {
      const auto r =
          e2e::run({"virsh", "-c", "qemu:///system", "qemu-agent-command", pool.name, cmd});
      EXPECT_NE(r.exit_code, 0) << cmd << ": " << r.output;
      EXPECT_NE(r.output.find("has been disabled"), std::string::npos) << r.output;
    }
    const auto ping = e2e::run({"virsh", "-c", "qemu:///system", "qemu-agent-command", pool.name,
                                R"({"execute":"guest-ping"})"});
    EXPECT_EQ(ping.exit_code, 0) << ping.output;

    const auto other = make_spec(uuid_like(51), {});
    const auto missing = driver_->apply_login(other, steady_clock::now() + 10s);
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().code, errc::not_found);
    ASSERT_TRUE(driver_->destroy(pool.host_id));
  }
  {
    SCOPED_TRACE("no clone wrote the template's disk; destroy_template removes it all");
    EXPECT_EQ(e2e::run({"sha256sum", (tdir / "disk.qcow2").string()}).output, disk_before.output);
    ASSERT_TRUE(driver_->destroy_template(tmpl.template_id));
    ASSERT_TRUE(driver_->destroy_template(tmpl.template_id));
    EXPECT_FALSE(fs::exists(tdir));
    EXPECT_FALSE(tap_exists(proxy_tap_name(tmpl.template_id)));
    EXPECT_TRUE(driver_->list_templates()->empty());
    const auto gone = driver_->restore_clone(tmpl.template_id, make_spec(uuid_like(52), {}),
                                             steady_clock::now() + 30s);
    ASSERT_FALSE(gone);
    EXPECT_EQ(gone.error().code, errc::template_missing);
    EXPECT_TRUE(driver_->list_owned()->empty());
  }
}

// The base disk with /usr/sbin/qemu-ga removed (debugfs on a raw copy), built once next to it.
fs::path disk_without_agent() {
  const fs::path base = e2e::base_disk();
  const fs::path out = base.parent_path() / "no-agent.qcow2";
  if (fs::exists(out)) {
    return out;
  }
  const fs::path raw = base.parent_path() / ("no-agent-" + std::to_string(::getpid()) + ".raw");
  const fs::path tmp = base.parent_path() / ("no-agent-" + std::to_string(::getpid()) + ".qcow2");
  const auto steps = {
      std::vector<std::string>{"qemu-img", "convert", "-O", "raw", base.string(), raw.string()},
      std::vector<std::string>{"debugfs", "-w", "-R", "rm /usr/sbin/qemu-ga", raw.string()},
      std::vector<std::string>{"qemu-img", "convert", "-O", "qcow2", raw.string(), tmp.string()}};
  for (const auto& argv : steps) {
    const auto r = e2e::run(argv);
    if (r.exit_code != 0) {
      fs::remove(raw);
      fs::remove(tmp);
      throw std::runtime_error(argv[0] + " failed: " + r.output);
    }
  }
  fs::remove(raw);
  fs::permissions(tmp, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                           fs::perms::others_read);
  fs::rename(tmp, out);
  return out;
}

class CloneWithoutAgentE2e : public CloneE2e {
 protected:
  fs::path base_disk() override { return disk_without_agent(); }
  std::chrono::milliseconds agent_bound() override { return 20s; }
};

TEST_F(CloneWithoutAgentE2e,
       AnImageWithoutGuestAgentIsCloneUnsupportedWithTheReasonAndLeavesNothing) {
  const auto tmpl = make_template(uuid_like(901));
  const auto built = driver_->build_template(tmpl, steady_clock::now() + 600s);
  ASSERT_FALSE(built);
  EXPECT_EQ(built.error().code, errc::clone_unsupported) << built.error().message;
  EXPECT_NE(built.error().message.find("guest agent"), std::string::npos) << built.error().message;
  std::printf("%s\n", built.error().message.c_str());
  EXPECT_TRUE(driver_->list_templates()->empty());
  EXPECT_FALSE(fs::exists(driver_->template_dir(tmpl.template_id)));
  const auto dom = e2e::run({"virsh", "-c", "qemu:///system", "domstate", tmpl.guest.name});
  EXPECT_NE(dom.exit_code, 0) << dom.output;
}

}  // namespace
}  // namespace litterbox::hypervisor
