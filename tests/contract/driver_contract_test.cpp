#include "base/clock.hpp"
#include "base/process.hpp"
#include "base/uuid.hpp"
#include "hypervisor/driver.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/fake/fake_driver.hpp"
#include "hypervisor/fleet_driver.hpp"
#include "hypervisor/libvirt/libvirt_driver.hpp"
#include "hypervisor/libvirt/proxy_link.hpp"
#include "hypervisor/ssh/keys.hpp"
#include "schema/host.hpp"

#include <gtest/gtest.h>
#include <libvirt/libvirt.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <mutex>
#include <pwd.h>
#include <set>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

// The driver contract (hypervisor/driver.hpp), run against the fake and against the libvirt
// driver on libvirt's test:///default (an in-process hypervisor: no daemon, nothing boots).
// Booting needs real guests, so wait_ready is covered here only up to its deadline; the e2e
// suites cover the rest.

namespace litterbox::hypervisor {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

/// A private directory removed with everything in it.
class temp_dir {
 public:
  temp_dir() {
    std::string pattern = (fs::temp_directory_path() / "lb-driver-contract-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("mkdtemp failed");
    }
    path_ = pattern;
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

struct fake_backend {
  static constexpr const char* name = "fake";
  static constexpr const char* provider = "fake";
  fake_driver driver;

  /// Makes the next create_vm of `spec` fail the way this backend can.
  void break_create(vm_spec& spec) { spec.image = "registry.test/fail-create:1"; }

  /// Stops the VM behind the driver's back, as `virsh destroy` does.
  bool stop_behind_its_back(const vm_spec& spec) {
    return driver.kill_vm(spec.host_id, fake_driver::vm_fate::powered_off);
  }
};

/// Two fake nodes behind a fleet_driver. The contract's specs name no node, so every create
/// reaches the first; ids go to both nodes (no database says where they are), which the
/// contract must not be able to tell from one driver.
struct fleet_backend {
  static constexpr const char* name = "fleet";
  static constexpr const char* provider = "fake";
  std::shared_ptr<fake_driver> first = std::make_shared<fake_driver>();
  fleet_driver driver{"node-a", "fake:///a", first,
                      [](std::string_view) -> result<std::optional<std::string>> {
                        return std::optional<std::string>();
                      }};
  fleet_backend() { driver.add_node("node-b", "fake:///b", std::make_shared<fake_driver>()); }

  void break_create(vm_spec& spec) { spec.image = "registry.test/fail-create:1"; }
  bool stop_behind_its_back(const vm_spec& spec) {
    return first->kill_vm(spec.host_id, fake_driver::vm_fate::powered_off);
  }
};

struct libvirt_backend {
  static constexpr const char* name = "libvirt";
  static constexpr const char* provider = "libvirt";
  temp_dir dir;
  fs::path base = make_base(dir.path());
  fixed_base_image images{base};
  libvirt_config cfg = config(dir.path());
  libvirt_driver driver{cfg, images};

  const std::string& driver_owner() const { return cfg.owner; }

  static fs::path make_base(const fs::path& dir) {
    const fs::path disk = dir / "base.qcow2";
    const auto r = run_process({"qemu-img", "create", "-q", "-f", "qcow2", disk.string(), "64M"},
                               std::chrono::seconds(60));
    if (!r || r->timed_out || r->exit_code != 0) {
      throw std::runtime_error("qemu-img create failed: " + (r ? r->err : r.error().message));
    }
    return disk;
  }

  static libvirt_config config(const fs::path& dir) {
    libvirt_config c;
    c.uri = "test:///default";
    c.accel = "tcg";
    c.state_dir = dir / "state";
    c.kernel = dir / "vmlinuz";
    c.initrd = dir / "initrd.img";
    // Each test its own owner tag: domains of other tests in this process are not ours.
    c.owner = "litterbox-contract-" + new_uuid_v7(system_clock{}.now()).substr(24);
    // No QEMU runs: the guest files stay with whoever runs the test.
    const passwd* me = ::getpwuid(::geteuid());
    c.qemu_user = me != nullptr ? me->pw_name : "root";
    c.isolate_host = false;  // test:///default runs no QEMU; the rule needs root and iptables
    // Nor taps, nor paused starts: the proxy links are recorded, not made.
    c.start_paused = false;
    c.links = std::make_shared<fake_proxy_links>();
    c.poll_interval = 10ms;
    return c;
  }

  /// The base disk disappears: create_vm finds no base for the digest.
  void break_create(vm_spec& /*spec*/) { fs::remove(base); }

  /// `virsh destroy` on a connection of its own (test:///default is one state per process).
  bool stop_behind_its_back(const vm_spec& spec) {
    const virConnectPtr conn = virConnectOpen(cfg.uri.c_str());
    if (conn == nullptr) {
      return false;
    }
    const virDomainPtr dom = virDomainLookupByName(conn, spec.name.c_str());
    const bool stopped = dom != nullptr && virDomainDestroy(dom) == 0;
    if (dom != nullptr) {
      virDomainFree(dom);
    }
    virConnectClose(conn);
    return stopped;
  }
};

/// A spec that render_seed accepts, for a new host id.
vm_spec make_spec(const std::string& digest) {
  vm_spec s;
  s.host_id = new_uuid_v7(system_clock{}.now());
  s.name = schema::host_name_for(s.host_id);
  s.image = "registry.test/debian:12";
  s.image_digest = digest;
  s.cpus = 1;
  s.memory_mib = 256;
  s.ssh_username = "agent";
  auto key = generate_ed25519("contract");
  EXPECT_TRUE(key.has_value()) << (key ? "" : key.error().message);
  if (key) {
    s.host_key = key.value();
    s.authorized_keys = {key.value().public_line};
    s.probe_public_key = key.value().public_line;
  }
  s.ready_token = "0123456789abcdef0123456789abcdef";
  s.ssh_host = "127.0.0.1";
  s.ssh_port = 2222;
  return s;
}

template <class Backend>
class driver_contract : public ::testing::Test {
 protected:
  Backend backend_;
  driver& driver_ = backend_.driver;

  /// A spec whose image is prepared.
  vm_spec prepared_spec() {
    const auto digest = driver_.prepare_image("registry.test/debian:12");
    EXPECT_TRUE(digest.has_value()) << (digest ? "" : digest.error().message);
    return make_spec(digest ? digest.value() : "");
  }

  std::vector<std::string> owned() {
    auto ids = driver_.list_owned();
    EXPECT_TRUE(ids.has_value()) << (ids ? "" : ids.error().message);
    return ids ? ids.value() : std::vector<std::string>{};
  }
};

struct backend_names {
  template <class T>
  static std::string GetName(int /*index*/) {
    return T::name;
  }
};

using backends = ::testing::Types<fake_backend, fleet_backend, libvirt_backend>;
TYPED_TEST_SUITE(driver_contract, backends, backend_names);

bool is_sha256_digest(const std::string& d) {
  return d.size() == 71 && d.rfind("sha256:", 0) == 0 &&
         std::all_of(d.begin() + 7, d.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

TYPED_TEST(driver_contract, ProviderNamesTheBackend) {
  EXPECT_EQ(this->driver_.provider(), TypeParam::provider);
}

TYPED_TEST(driver_contract, PrepareImageReturnsOneStableSha256Digest) {
  const auto a = this->driver_.prepare_image("registry.test/debian:12");
  ASSERT_TRUE(a.has_value()) << a.error().message;
  EXPECT_TRUE(is_sha256_digest(a.value())) << a.value();
  const auto b = this->driver_.prepare_image("registry.test/debian:12");
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b.value(), a.value());
}

TYPED_TEST(driver_contract, ConcurrentPreparesOfOneImageAgreeOnTheDigest) {
  std::vector<std::future<result<std::string>>> calls;
  for (int i = 0; i < 4; ++i) {
    calls.push_back(std::async(std::launch::async, [this] {
      return this->driver_.prepare_image("registry.test/debian:12");
    }));
  }
  std::set<std::string> digests;
  for (auto& c : calls) {
    const auto d = c.get();
    ASSERT_TRUE(d.has_value()) << d.error().message;
    digests.insert(d.value());
  }
  EXPECT_EQ(digests.size(), 1U);
}

TYPED_TEST(driver_contract, NothingIsOwnedBeforeAnyCreate) {
  EXPECT_TRUE(this->owned().empty());
}

TYPED_TEST(driver_contract, CreatedVmIsListedAsOwnedUntilDestroyed) {
  const auto spec = this->prepared_spec();
  const auto created = this->driver_.create_vm(spec);
  ASSERT_TRUE(created.has_value()) << created.error().message;
  EXPECT_EQ(this->owned(), std::vector<std::string>{spec.host_id});
  ASSERT_TRUE(this->driver_.destroy(spec.host_id));
  EXPECT_TRUE(this->owned().empty());
}

TYPED_TEST(driver_contract, VmStatesShowARunningVmThenItsStopAndNothingAfterDestroy) {
  const auto spec = this->prepared_spec();
  ASSERT_TRUE(this->driver_.create_vm(spec));
  auto states = this->driver_.vm_states();
  ASSERT_TRUE(states.has_value()) << states.error().message;
  ASSERT_EQ(states->count(spec.host_id), 1U);
  EXPECT_EQ(states->at(spec.host_id).state, vm_state::running);

  std::mutex mutex;
  std::condition_variable cv;
  int wakes = 0;
  this->driver_.watch_vms([&] {
    {
      const std::lock_guard lock(mutex);
      ++wakes;
    }
    cv.notify_all();
  });
  ASSERT_TRUE(this->backend_.stop_behind_its_back(spec));
  {
    std::unique_lock lock(mutex);
    EXPECT_TRUE(cv.wait_for(lock, 10s, [&] { return wakes > 0; }))
        << "no wake-up for a VM stopped behind the driver's back";
  }
  this->driver_.watch_vms({});
  states = this->driver_.vm_states();
  ASSERT_TRUE(states.has_value()) << states.error().message;
  ASSERT_EQ(states->count(spec.host_id), 1U);
  EXPECT_EQ(states->at(spec.host_id).state, vm_state::stopped);
  EXPECT_FALSE(states->at(spec.host_id).detail.empty());

  ASSERT_TRUE(this->driver_.destroy(spec.host_id));
  states = this->driver_.vm_states();
  ASSERT_TRUE(states.has_value()) << states.error().message;
  EXPECT_EQ(states->count(spec.host_id), 0U);
}

TYPED_TEST(driver_contract, CreatingAgainUnderOneIdLeavesOneVm) {
  const auto spec = this->prepared_spec();
  ASSERT_TRUE(this->driver_.create_vm(spec));
  const auto again = this->driver_.create_vm(spec);
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_EQ(this->owned(), std::vector<std::string>{spec.host_id});
  ASSERT_TRUE(this->driver_.destroy(spec.host_id));
  EXPECT_TRUE(this->owned().empty());
}

TYPED_TEST(driver_contract, DestroyIsIdempotent) {
  const auto spec = this->prepared_spec();
  ASSERT_TRUE(this->driver_.create_vm(spec));
  const auto first = this->driver_.destroy(spec.host_id);
  ASSERT_TRUE(first.has_value()) << first.error().message;
  const auto second = this->driver_.destroy(spec.host_id);
  ASSERT_TRUE(second.has_value()) << second.error().message;
  EXPECT_TRUE(this->owned().empty());
}

TYPED_TEST(driver_contract, DestroyOfAnUnknownHostSucceeds) {
  const auto out = this->driver_.destroy(new_uuid_v7(system_clock{}.now()));
  ASSERT_TRUE(out.has_value()) << out.error().message;
  EXPECT_TRUE(this->owned().empty());
}

TYPED_TEST(driver_contract, AFailedCreateFailsWithVmCreateFailedAndLeavesNothing) {
  auto spec = this->prepared_spec();
  this->backend_.break_create(spec);
  const auto out = this->driver_.create_vm(spec);
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, errc::vm_create_failed);
  EXPECT_TRUE(this->owned().empty());
  EXPECT_EQ(this->driver_.console(spec.host_id, 1024).error().code, errc::not_found);
}

TYPED_TEST(driver_contract, ConsoleOfAnUnknownHostIsNotFound) {
  const auto out = this->driver_.console(new_uuid_v7(system_clock{}.now()), 1024);
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, errc::not_found);
}

TYPED_TEST(driver_contract, ConsoleOfACreatedVmIsAtMostMaxBytesAndGoneAfterDestroy) {
  const auto spec = this->prepared_spec();
  ASSERT_TRUE(this->driver_.create_vm(spec));
  const auto text = this->driver_.console(spec.host_id, 8);
  ASSERT_TRUE(text.has_value()) << text.error().message;
  EXPECT_LE(text.value().size(), 8U);
  ASSERT_TRUE(this->driver_.destroy(spec.host_id));
  const auto gone = this->driver_.console(spec.host_id, 8);
  ASSERT_FALSE(gone.has_value());
  EXPECT_EQ(gone.error().code, errc::not_found);
}

TYPED_TEST(driver_contract, WaitReadyPastItsDeadlineIsBootTimeout) {
  const auto spec = this->prepared_spec();
  ASSERT_TRUE(this->driver_.create_vm(spec));
  const auto out = this->driver_.wait_ready(spec, std::chrono::steady_clock::now() - 1s);
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, errc::boot_timeout);
  ASSERT_TRUE(this->driver_.destroy(spec.host_id));
}

TYPED_TEST(driver_contract, WaitReadyOfAVmThatIsNotThereFailsAtOnceWithBootFailed) {
  const auto spec = this->prepared_spec();
  ASSERT_TRUE(this->driver_.create_vm(spec));
  ASSERT_TRUE(this->driver_.destroy(spec.host_id));
  // A deadline far off: the driver must notice the missing VM rather than wait it out.
  const auto out = this->driver_.wait_ready(spec, std::chrono::steady_clock::now() + 1h);
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, errc::boot_failed);
}

TYPED_TEST(driver_contract, ApplyLoginOfAHostThatIsNotRunningIsNotFound) {
  auto spec = this->prepared_spec();
  ASSERT_TRUE(this->driver_.create_vm(spec));
  ASSERT_TRUE(this->driver_.destroy(spec.host_id));
  const auto out = this->driver_.apply_login(spec, std::chrono::steady_clock::now() + 30s);
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, errc::not_found);
  EXPECT_TRUE(this->owned().empty());
}

TYPED_TEST(driver_contract, MalformedHostIdsAreRejectedAndTouchNothing) {
  const std::vector<std::string> malformed = {
      "", "../../etc", "0190c0de-0000-7000-8000-00000000000g", "a/b", std::string(65, 'a')};
  for (const auto& bad : malformed) {
    auto spec = this->prepared_spec();
    spec.host_id = bad;
    const auto created = this->driver_.create_vm(spec);
    ASSERT_FALSE(created.has_value()) << '"' << bad << '"';
    EXPECT_EQ(created.error().code, errc::vm_create_failed);
    const auto destroyed = this->driver_.destroy(bad);
    ASSERT_FALSE(destroyed.has_value()) << '"' << bad << '"';
    EXPECT_EQ(destroyed.error().code, errc::teardown_failed);
    const auto console = this->driver_.console(bad, 64);
    ASSERT_FALSE(console.has_value());
    EXPECT_EQ(console.error().code, errc::not_found);
  }
  EXPECT_TRUE(this->owned().empty());
}

TYPED_TEST(driver_contract, CollectImagesKeepsDigestsInUse) {
  const auto digest = this->driver_.prepare_image("registry.test/debian:12");
  ASSERT_TRUE(digest.has_value());
  const auto removed = this->driver_.collect_images({digest.value()});
  ASSERT_TRUE(removed.has_value()) << removed.error().message;
  EXPECT_EQ(removed.value(), 0);
  // Still usable: a create from it works.
  const auto spec = make_spec(digest.value());
  ASSERT_TRUE(this->driver_.create_vm(spec));
  ASSERT_TRUE(this->driver_.destroy(spec.host_id));
}

TYPED_TEST(driver_contract, CollectImagesKeepsAJustPreparedImageNoRowReferencesYet) {
  // A create between prepare_image and recording its digest must not lose its base.
  ASSERT_TRUE(this->driver_.prepare_image("registry.test/debian:12"));
  const auto removed = this->driver_.collect_images({});
  ASSERT_TRUE(removed.has_value()) << removed.error().message;
  EXPECT_EQ(removed.value(), 0);
}

TYPED_TEST(driver_contract, DoctorReturnsUniquelyNamedChecksWithDetails) {
  const auto checks = this->driver_.doctor();
  ASSERT_FALSE(checks.empty());
  std::set<std::string> names;
  for (const auto& c : checks) {
    EXPECT_FALSE(c.name.empty());
    EXPECT_TRUE(std::all_of(c.name.begin(), c.name.end(), [](char ch) {
      return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_';
    })) << c.name;
    EXPECT_FALSE(c.detail.empty()) << c.name;
    EXPECT_GE(c.latency_ms, 0.0) << c.name;
    if (!c.ok) {
      EXPECT_FALSE(c.hint.empty()) << c.name << ": a failing check says what to do";
    }
    names.insert(c.name);
  }
  EXPECT_EQ(names.size(), checks.size());
}

// The libvirt driver on its own: list_owned also reports leftover host directories, so the
// domain itself is looked up here, on a second connection to the same test:///default state.

TEST(libvirt_driver_on_test_hypervisor, CreateVmDefinesAndStartsADomainCarryingTheOwnerTag) {
  libvirt_backend b;
  const auto digest = b.driver.prepare_image("registry.test/debian:12");
  ASSERT_TRUE(digest.has_value());
  const auto spec = make_spec(digest.value());
  ASSERT_TRUE(b.driver.create_vm(spec));

  const virConnectPtr conn = virConnectOpen("test:///default");
  ASSERT_NE(conn, nullptr);
  virDomainPtr dom = virDomainLookupByName(conn, spec.name.c_str());
  ASSERT_NE(dom, nullptr) << "no domain " << spec.name;
  EXPECT_EQ(virDomainIsActive(dom), 1);
  char* meta =
      virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, std::string(k_metadata_ns).c_str(), 0);
  ASSERT_NE(meta, nullptr);
  const std::string text = meta;
  std::free(meta);
  EXPECT_NE(text.find(spec.host_id), std::string::npos) << text;
  EXPECT_EQ(metadata_host_id(text, b.driver_owner()), spec.host_id) << text;
  virDomainFree(dom);

  ASSERT_TRUE(b.driver.destroy(spec.host_id));
  virDomainPtr gone = virDomainLookupByName(conn, spec.name.c_str());
  EXPECT_EQ(gone, nullptr) << "the domain is still defined after destroy";
  if (gone != nullptr) {
    virDomainFree(gone);
  }
  virConnectClose(conn);
}

// The fake on its own: what the contract says about concurrent prepares, beyond one digest.

TEST(fake_driver_prepare, AConcurrentPrepareOfOneImageReturnsOnlyOnceItsConversionIsDone) {
  std::promise<void> converting;
  std::promise<void> waiting;
  std::promise<void> release;
  const auto released = release.get_future().share();
  std::atomic<bool> converted{false};
  fake_options o;
  o.on_convert = [&](const std::string& /*digest*/) {
    converting.set_value();
    released.wait();
    converted = true;
  };
  o.on_wait = [&](const std::string& /*digest*/) { waiting.set_value(); };
  fake_driver fake(o);
  auto first =
      std::async(std::launch::async, [&] { return fake.prepare_image("registry.test/debian:12"); });
  converting.get_future().wait();
  auto second = std::async(std::launch::async, [&] {
    auto digest = fake.prepare_image("registry.test/debian:12");
    return std::make_pair(std::move(digest), converted.load());
  });
  // Only a guard: the second call announces that it waits as soon as it is inside.
  const auto announced = waiting.get_future().wait_for(30s);
  release.set_value();
  const auto a = first.get();
  const auto [b, after_conversion] = second.get();
  EXPECT_EQ(announced, std::future_status::ready);
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(a.value(), b.value());
  EXPECT_TRUE(after_conversion) << "returned while the conversion was still running";
  EXPECT_EQ(fake.conversions(), 1);
}

// The fake on its own: apply_login ends with the readiness proof a real guest gives, an SSH
// handshake presenting the host key the clone was restored with (real guests: the clone e2e).

template_spec contract_template(const std::string& digest) {
  template_spec t;
  t.template_id = new_uuid_v7(system_clock{}.now());
  t.guest = make_spec(digest);
  t.guest.authorized_keys.clear();
  return t;
}

TEST(fake_driver_apply_login, ApplyLoginSucceedsOnceTheHandshakePresentsTheClonesHostKey) {
  fake_driver fake;
  const auto digest = fake.prepare_image("registry.test/debian:12");
  ASSERT_TRUE(digest.has_value());
  const auto t = contract_template(digest.value());
  ASSERT_TRUE(fake.build_template(t, std::chrono::steady_clock::now() + 30s));
  auto spec = make_spec(digest.value());
  spec.authorized_keys.clear();
  ASSERT_TRUE(fake.restore_clone(t.template_id, spec, std::chrono::steady_clock::now() + 30s));
  spec.authorized_keys = {"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGNhbGxlcg caller"};
  spec.env = {{"TOKEN", "a'b"}};
  const auto out = fake.apply_login(spec, std::chrono::steady_clock::now() + 30s);
  ASSERT_TRUE(out.has_value()) << out.error().message;
  EXPECT_EQ(fake.vm(spec.host_id)->authorized_keys, spec.authorized_keys);
  EXPECT_EQ(fake.vm(spec.host_id)->env, spec.env);
}

TEST(fake_driver_apply_login, ApplyLoginWithAHostKeyOtherThanTheClonesIsHostKeyMismatch) {
  fake_driver fake;
  const auto digest = fake.prepare_image("registry.test/debian:12");
  ASSERT_TRUE(digest.has_value());
  const auto t = contract_template(digest.value());
  ASSERT_TRUE(fake.build_template(t, std::chrono::steady_clock::now() + 30s));
  auto spec = make_spec(digest.value());
  spec.authorized_keys.clear();
  ASSERT_TRUE(fake.restore_clone(t.template_id, spec, std::chrono::steady_clock::now() + 30s));
  auto other = spec;
  const auto key = generate_ed25519("other");
  ASSERT_TRUE(key.has_value());
  other.host_key = key.value();
  const auto out = fake.apply_login(other, std::chrono::steady_clock::now() + 30s);
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, errc::host_key_mismatch);
}

}  // namespace
}  // namespace litterbox::hypervisor
