#include "base/clock.hpp"
#include "base/time.hpp"
#include "base/uuid.hpp"
#include "hypervisor/libvirt/domain_xml.hpp"
#include "tests/e2e/api/e2e_support.hpp"
#include "tests/e2e/clones/cloned_guests.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

namespace litterbox::e2e_test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

/// A domain that never runs: no kernel, a tiny qcow2 disk. `metadata` goes into <metadata>
/// verbatim ("" for none).
std::string idle_domain_xml(const std::string& name, const fs::path& disk,
                            const std::string& metadata) {
  std::string x = "<domain type='qemu'>\n  <name>" + name + "</name>\n";
  if (!metadata.empty()) {
    x += "  <metadata>" + metadata + "</metadata>\n";
  }
  x += "  <memory unit='MiB'>64</memory>\n  <vcpu>1</vcpu>\n"
       "  <os><type arch='x86_64'>hvm</type></os>\n"
       "  <devices>\n"
       "    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
       "<source file='" +
       disk.string() +
       "'/><target dev='vda' bus='virtio'/></disk>\n"
       "  </devices>\n</domain>\n";
  return x;
}

/// Defines a domain from `xml` with a 1 MiB qcow2 disk at `disk`; the reason when it fails.
std::string define_domain(const fs::path& xml_file, const std::string& xml, const fs::path& disk) {
  fs::create_directories(disk.parent_path());
  const auto img = run_process({"qemu-img", "create", "-q", "-f", "qcow2", disk.string(), "1M"},
                               {"PATH=/usr/bin:/bin"}, 60s);
  if (img.exit_code != 0) {
    return "qemu-img: " + img.err;
  }
  write_private_file(xml_file, xml);
  const auto r = virsh({"define", xml_file.string()});
  return r.exit_code == 0 ? "" : "virsh define: " + r.out + r.err;
}

/// Our metadata element naming `host_id` and owner tag `owner`.
std::string metadata(const std::string& host_id, const std::string& owner) {
  return "<lb:litterbox xmlns:lb='" + std::string(hypervisor::k_metadata_ns) + "'><lb:host-id>" +
         host_id + "</lb:host-id><lb:owner>" + owner + "</lb:owner></lb:litterbox>";
}

/// Removes the test's own domains however the test ends.
struct domain_cleanup {
  std::vector<std::string> names;
  ~domain_cleanup() {
    for (const auto& n : names) {
      if (domain_exists(n)) {
        virsh({"destroy", n});
        virsh({"undefine", n});
      }
    }
  }
};

TEST(RealLifecycle, ExpiredHostAndTaggedOrphanGoAfterOneReapRunWhileAnUntaggedDomainStays) {
  // The guest is a clone from the shared service (tests/e2e/clones), whose in-process reaper
  // loop stays out of the way: the pass under test is `litterboxd reap`.
  e2e_service* service = nullptr;
  ASSERT_NO_THROW(service = &cloned_guest_service());
  const temp_dir work("lb-e2e-lifecycle");
  const system_clock clock;

  // A long lease first, so the host is surely active before it expires; then a renew
  // brings the end close.
  const auto created =
      service->create({{"expires_at", format_rfc3339(clock.now() + std::chrono::hours(2))}});
  ASSERT_EQ(created.status, 201) << created << "\nlitterboxd:\n"
                                 << service->process().output_tail();
  const json host = body_json(created);
  const auto id = host.value("id", "");
  ASSERT_EQ(host.value("status", ""), "active") << host.dump();
  EXPECT_EQ(create_path(created), "clone");
  ASSERT_TRUE(domain_exists(host.value("name", "")));

  const auto renewed = service->http().post(
      "/hosts/" + id + "/renew", json{{"expires_at", format_rfc3339(clock.now() + 3s)}}.dump(),
      e2e_service::auth({{"Content-Type", "application/json"}}));
  ASSERT_EQ(renewed.status, 200) << renewed;
  const auto expires_at = parse_rfc3339(body_json(renewed).value("expires_at", ""));
  ASSERT_TRUE(expires_at.has_value()) << renewed;

  // A domain that carries our metadata (namespace and owner tag) but has no row, with a
  // per-host directory like a create leaves behind. Beside it, a stranger's domain without
  // metadata and one in our namespace under another owner tag: neither is ours to touch.
  const auto orphan_id = new_uuid_v7(clock.now());
  const auto suffix = orphan_id.substr(24);
  const auto orphan_name = "sb-" + suffix;
  const auto stranger_name = "lb-e2e-stranger-" + suffix;
  const auto other_owner_id = new_uuid_v7(clock.now());
  const auto other_owner_name = "sb-" + other_owner_id.substr(24);
  domain_cleanup cleanup{{orphan_name, stranger_name, other_owner_name}};
  const auto orphan_dir = service->host_dir(orphan_id);
  ASSERT_EQ(define_domain(work.path() / "orphan.xml",
                          idle_domain_xml(orphan_name, orphan_dir / "disk.qcow2",
                                          metadata(orphan_id, service->owner())),
                          orphan_dir / "disk.qcow2"),
            "");
  ASSERT_EQ(define_domain(work.path() / "stranger.xml",
                          idle_domain_xml(stranger_name, work.path() / "stranger.qcow2", ""),
                          work.path() / "stranger.qcow2"),
            "");
  ASSERT_EQ(define_domain(work.path() / "other-owner.xml",
                          idle_domain_xml(other_owner_name, work.path() / "other-owner.qcow2",
                                          metadata(other_owner_id, "someone-else")),
                          work.path() / "other-owner.qcow2"),
            "");
  ASSERT_TRUE(domain_exists(orphan_name));
  ASSERT_TRUE(domain_exists(stranger_name));
  ASSERT_TRUE(domain_exists(other_owner_name));

  // Waits for the lease end on the clock the server compares against (this machine's).
  while (clock.now() <= *expires_at + 1s) {
    std::this_thread::sleep_for(100ms);
  }
  const auto reap = service->reap();
  EXPECT_EQ(reap.exit_code, 0) << reap;
  const auto log = reap.out + reap.err;
  EXPECT_NE(log.find(id), std::string::npos) << "the reap log does not name the host:\n" << reap;
  EXPECT_NE(log.find(orphan_id), std::string::npos) << "the reap log does not name the orphan:\n"
                                                    << reap;

  EXPECT_EQ(leftovers(*service, host), std::vector<std::string>{});
  EXPECT_FALSE(domain_exists(orphan_name)) << "the tagged domain without a row was not swept";
  EXPECT_FALSE(fs::exists(orphan_dir)) << "the orphan's files were not swept";
  EXPECT_TRUE(domain_exists(stranger_name)) << "a domain without our metadata was touched";
  EXPECT_TRUE(domain_exists(other_owner_name)) << "a domain with another owner tag was touched";
  EXPECT_TRUE(fs::exists(work.path() / "stranger.qcow2"));
}

}  // namespace
}  // namespace litterbox::e2e_test
