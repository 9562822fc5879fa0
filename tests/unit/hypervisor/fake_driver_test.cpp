#include "hypervisor/fake/fake_driver.hpp"

#include "hypervisor/errc.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <filesystem>
#include <map>
#include <mutex>
#include <netinet/in.h>
#include <random>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

namespace litterbox::hypervisor {
namespace {

using std::chrono::steady_clock;

vm_spec host(std::string id, std::string image = "registry.test/base:1") {
  vm_spec s;
  s.host_id = id;
  s.name = "sb-" + id;
  s.image = std::move(image);
  s.image_digest = "sha256:aaaa";
  s.cpus = 2;
  s.memory_mib = 1024;
  s.ssh_username = "agent";
  s.ssh_host = "127.0.0.1";
  s.ssh_port = 30000;
  return s;
}

template_spec tmpl(std::string id, std::string image = "registry.test/base:1") {
  template_spec t;
  t.template_id = id;
  t.guest = host("t-" + id, std::move(image));
  return t;
}

steady_clock::time_point soon() {
  return steady_clock::now() + std::chrono::seconds(5);
}

TEST(FakeDriverTemplates, ACloneOfABuiltTemplateIsALiveVmRestoredFromIt) {
  fake_driver d;
  ASSERT_TRUE(d.build_template(tmpl("t1"), soon()));
  EXPECT_EQ(d.template_of("t1"), key_of(host("x")));
  auto spec = host("a1");
  spec.authorized_keys = {"ssh-ed25519 AAAA user"};
  ASSERT_TRUE(d.restore_clone("t1", spec, soon()));
  EXPECT_EQ(d.live_vms(), std::set<std::string>{"a1"});
  EXPECT_EQ(d.cloned_from("a1"), "t1");
  EXPECT_EQ(d.vm("a1")->authorized_keys, spec.authorized_keys);
  EXPECT_EQ(*d.list_owned(), std::vector<std::string>{"a1"});
  EXPECT_EQ(*d.list_templates(), std::vector<std::string>{"t1"});
}

TEST(FakeDriverTemplates, RestoreOfAnUnknownTemplateFailsWithTemplateMissingAndMakesNoVm) {
  fake_driver d;
  const auto r = d.restore_clone("nope", host("a1"), soon());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::template_missing);
  EXPECT_TRUE(d.live_vms().empty());
}

TEST(FakeDriverTemplates, RestoreForAnotherImageSizeOrUserIsRefused) {
  fake_driver d;
  ASSERT_TRUE(d.build_template(tmpl("t1"), soon()));
  auto other_memory = host("a1");
  other_memory.memory_mib = 2048;
  auto other_digest = host("a2");
  other_digest.image_digest = "sha256:bbbb";
  auto other_disk = host("a3");
  other_disk.disk_gb = 20;
  auto other_user = host("a4");
  other_user.ssh_username = "root";
  for (const auto& spec : {other_memory, other_digest, other_disk, other_user}) {
    const auto r = d.restore_clone("t1", spec, soon());
    ASSERT_FALSE(r) << spec.host_id;
    EXPECT_EQ(r.error().code, errc::vm_create_failed) << spec.host_id;
  }
  EXPECT_TRUE(d.live_vms().empty());
}

TEST(FakeDriverTemplates, AnImageWithoutAgentIsCloneUnsupportedAndLeavesNoTemplate) {
  fake_driver d;
  const auto r = d.build_template(tmpl("t1", "registry.test/no-agent:1"), soon());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::clone_unsupported);
  EXPECT_NE(r.error().message.find("guest-agent"), std::string::npos);
  EXPECT_TRUE(d.list_templates()->empty());
}

TEST(FakeDriverTemplates, ATemplateGuestWithLoginKeysOrEnvIsRefused) {
  fake_driver d;
  auto with_keys = tmpl("t1");
  with_keys.guest.authorized_keys = {"ssh-ed25519 AAAA user"};
  auto with_env = tmpl("t2");
  with_env.guest.env = {{"A", "b"}};
  EXPECT_EQ(d.build_template(with_keys, soon()).error().code, errc::vm_create_failed);
  EXPECT_EQ(d.build_template(with_env, soon()).error().code, errc::vm_create_failed);
  EXPECT_TRUE(d.list_templates()->empty());
}

TEST(FakeDriverTemplates, ARebuildReplacesTheTemplateOfThatId) {
  fake_driver d;
  ASSERT_TRUE(d.build_template(tmpl("t1"), soon()));
  auto bigger = tmpl("t1");
  bigger.guest.memory_mib = 2048;
  ASSERT_TRUE(d.build_template(bigger, soon()));
  EXPECT_EQ(d.template_of("t1")->memory_mib, 2048);
  EXPECT_EQ(*d.list_templates(), std::vector<std::string>{"t1"});
}

TEST(FakeDriverTemplates, ABuildThatCannotFinishBeforeTheDeadlineTimesOut) {
  fake_options slow;
  slow.template_delay = std::chrono::milliseconds(200);
  fake_driver d(slow);
  const auto r = d.build_template(tmpl("t1"), steady_clock::now() + std::chrono::milliseconds(20));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::boot_timeout);
  EXPECT_TRUE(d.list_templates()->empty());
}

TEST(FakeDriverTemplates, ApplyLoginReplacesKeysAndEnvOfARunningCloneOnly) {
  fake_driver d;
  ASSERT_TRUE(d.build_template(tmpl("t1"), soon()));
  ASSERT_TRUE(d.restore_clone("t1", host("a1"), soon()));
  EXPECT_TRUE(d.vm("a1")->authorized_keys.empty());
  auto login = host("a1");
  login.authorized_keys = {"ssh-ed25519 BBBB caller"};
  login.env = {{"TOKEN", "a'b\"c $(x)"}};
  ASSERT_TRUE(d.apply_login(login, soon()));
  EXPECT_EQ(d.vm("a1")->authorized_keys, login.authorized_keys);
  EXPECT_EQ(d.vm("a1")->env, login.env);
  const auto r = d.apply_login(host("a2"), soon());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::not_found);
}

TEST(FakeDriverTemplates, DestroyTemplateIsIdempotentAndRunningClonesSurviveIt) {
  fake_driver d;
  ASSERT_TRUE(d.build_template(tmpl("t1"), soon()));
  ASSERT_TRUE(d.restore_clone("t1", host("a1"), soon()));
  ASSERT_TRUE(d.destroy_template("t1"));
  ASSERT_TRUE(d.destroy_template("t1"));
  EXPECT_TRUE(d.list_templates()->empty());
  EXPECT_EQ(d.live_vms(), std::set<std::string>{"a1"});
  EXPECT_EQ(d.restore_clone("t1", host("a2"), soon()).error().code, errc::template_missing);
  ASSERT_TRUE(d.destroy("a1"));
  EXPECT_FALSE(d.cloned_from("a1"));
}

TEST(FakeDriverTemplates, InjectedRestoreFailuresAreReturnedAndCounted) {
  fake_driver d;
  ASSERT_TRUE(d.build_template(tmpl("t1"), soon()));
  d.set_failure(fake_phase::restore_clone, make_error(errc::boot_failed, "injected"));
  EXPECT_EQ(d.restore_clone("t1", host("a1"), soon()).error().code, errc::boot_failed);
  d.set_failure(fake_phase::restore_clone, std::nullopt);
  EXPECT_TRUE(d.restore_clone("t1", host("a1"), soon()));
  EXPECT_EQ(d.calls(fake_phase::restore_clone), 2);
}

/// Options with a state dir of their own under the temp dir (the test removes it).
fake_options with_fresh_state_dir() {
  fake_options o;
  o.state_dir = std::filesystem::temp_directory_path() /
                ("lb-fake-" + std::to_string(std::random_device{}()));
  return o;
}

TEST(FakeDriverTemplates, SavedTemplatesAndClonesOutliveTheProcessWithAStateDir) {
  const auto persistent = with_fresh_state_dir();
  const auto dir = *persistent.state_dir;
  {
    fake_driver d(persistent);
    auto t = tmpl("t1");
    t.guest.disk_gb = 8;
    ASSERT_TRUE(d.build_template(t, soon()));
    auto h = host("a1");
    h.disk_gb = 8;
    ASSERT_TRUE(d.restore_clone("t1", h, soon()));
  }
  fake_driver again(persistent);
  EXPECT_EQ(*again.list_templates(), std::vector<std::string>{"t1"});
  EXPECT_EQ(again.template_of("t1")->disk_gb, 8);
  EXPECT_EQ(*again.list_owned(), std::vector<std::string>{"a1"});
  auto h2 = host("a2");
  h2.disk_gb = 8;
  EXPECT_TRUE(again.restore_clone("t1", h2, soon()));
  ASSERT_TRUE(again.destroy_template("t1"));
  EXPECT_TRUE(again.list_templates()->empty());
  std::filesystem::remove_all(dir);
}

// Two drivers on one state dir stand for two litterboxd processes on one node: like two
// clients of one libvirtd, each sees what the other made or destroyed since it started.
TEST(FakeDriverStateDir, TwoDriversOnOneStateDirSeeEachOthersVmsAndTemplates) {
  const auto shared = with_fresh_state_dir();
  const auto dir = *shared.state_dir;
  fake_driver one(shared);
  fake_driver two(shared);

  ASSERT_TRUE(one.create_vm(host("a1")));
  EXPECT_EQ(*two.list_owned(), std::vector<std::string>{"a1"});
  EXPECT_EQ(two.vm_states()->count("a1"), 1U);
  EXPECT_TRUE(two.console("a1", 4096));
  EXPECT_TRUE(two.wait_ready(host("a1"), soon()));

  // Destroyed by the other one: gone for both, and counted once, by the one that removed it.
  ASSERT_TRUE(two.destroy("a1"));
  EXPECT_TRUE(one.list_owned()->empty());
  EXPECT_TRUE(one.vm_states()->empty());
  EXPECT_EQ(one.wait_ready(host("a1"), soon()).error().code, errc::boot_failed);
  EXPECT_EQ(one.apply_login(host("a1"), soon()).error().code, errc::not_found);
  ASSERT_TRUE(one.destroy("a1"));
  EXPECT_EQ(two.vms_destroyed(), 1);
  EXPECT_EQ(one.vms_destroyed(), 0);
  EXPECT_TRUE(one.live_vms().empty());

  ASSERT_TRUE(one.build_template(tmpl("t1"), soon()));
  EXPECT_EQ(*two.list_templates(), std::vector<std::string>{"t1"});
  ASSERT_TRUE(two.restore_clone("t1", host("b2"), soon()));
  EXPECT_EQ(*one.list_owned(), std::vector<std::string>{"b2"});
  ASSERT_TRUE(one.destroy_template("t1"));
  EXPECT_TRUE(two.list_templates()->empty());
  EXPECT_EQ(two.restore_clone("t1", host("c3"), soon()).error().code, errc::template_missing);
  std::filesystem::remove_all(dir);
}

/// Records what a driver hands over; owns (and closes) the listeners it is given.
class recording_sink final : public guest_listener_sink {
 public:
  ~recording_sink() override {
    for (const auto& [id, fd] : fds) {
      ::close(fd);
    }
  }
  void add_listener(const std::string& host_id, int fd) override {
    const std::lock_guard lock(mutex);
    if (const auto it = fds.find(host_id); it != fds.end()) {
      ::close(it->second);
    }
    fds[host_id] = fd;
    events.push_back("add " + host_id);
  }
  void remove_listener(std::string_view host_id) override {
    const std::lock_guard lock(mutex);
    if (const auto it = fds.find(std::string(host_id)); it != fds.end()) {
      ::close(it->second);
      fds.erase(it);
    }
    events.push_back("remove " + std::string(host_id));
  }
  std::mutex mutex;
  std::map<std::string, int> fds;
  std::vector<std::string> events;
};

/// "127.0.0.1:PORT" of a listening socket.
std::string local_address(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return {};
  }
  char text[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &addr.sin_addr, text, sizeof text);
  return std::string(text) + ":" + std::to_string(ntohs(addr.sin_port));
}

TEST(FakeDriverGuestEndpoints, EachVmHandsItsOwnLoopbackListenerToTheSinkUntilDestroyed) {
  recording_sink sink;
  fake_options o;
  o.guest_listeners = &sink;
  fake_driver d(o);
  ASSERT_TRUE(d.create_vm(host("a1")));
  ASSERT_TRUE(d.build_template(tmpl("t1"), soon()));
  ASSERT_TRUE(d.restore_clone("t1", host("b2"), soon()));
  ASSERT_EQ(sink.fds.size(), 2U);
  const auto a = d.guest_endpoint("a1");
  const auto b = d.guest_endpoint("b2");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(*a, local_address(sink.fds.at("a1")));
  EXPECT_EQ(*b, local_address(sink.fds.at("b2")));
  EXPECT_NE(*a, *b);
  int listening = 0;
  socklen_t len = sizeof listening;
  ASSERT_EQ(::getsockopt(sink.fds.at("a1"), SOL_SOCKET, SO_ACCEPTCONN, &listening, &len), 0);
  EXPECT_EQ(listening, 1);

  ASSERT_TRUE(d.destroy("a1"));
  EXPECT_FALSE(d.guest_endpoint("a1"));
  EXPECT_EQ(sink.fds.count("a1"), 0U);
  EXPECT_TRUE(d.kill_vm("b2", fake_driver::vm_fate::vanished));
  EXPECT_FALSE(d.guest_endpoint("b2"));
  EXPECT_TRUE(sink.fds.empty());
  EXPECT_EQ(sink.events, (std::vector<std::string>{"add a1", "add b2", "remove a1", "remove b2"}));
}

TEST(FakeDriverGuestEndpoints, WithoutASinkNoEndpointIsOpened) {
  fake_driver d;
  ASSERT_TRUE(d.create_vm(host("a1")));
  EXPECT_FALSE(d.guest_endpoint("a1"));
}

}  // namespace
}  // namespace litterbox::hypervisor
