// The libvirt driver's create_vm takes its overlay from the image store, so the store's
// checks (disk_gb against the base, the cap on all overlays) end a create at once. libvirt's
// test:///default driver needs no daemon; qemu-img makes the disks.
#include "hypervisor/errc.hpp"
#include "hypervisor/image/image_store.hpp"
#include "hypervisor/image/image_store_bases.hpp"
#include "hypervisor/libvirt/libvirt_driver.hpp"
#include "tests/unit/image/cached_base.hpp"
#include "tests/unit/image/layer_builder.hpp"

#include <gtest/gtest.h>

#include <chrono>

namespace litterbox::hypervisor::image {
namespace {

namespace fs = std::filesystem;
using namespace testing;

constexpr std::uint64_t k_gib = std::uint64_t{1} << 30;

class OverlayThroughTheDriver : public ::testing::Test {
 protected:
  OverlayThroughTheDriver() {
    // A cached base of a 3 GiB root filesystem, as this conversion would have left it.
    write_cached_base(state_ / "images", digest_, k_base_conversion, 3 * k_gib);
  }

  image_store make_store(std::uint64_t overlay_max_bytes) {
    store_config config;
    config.state_dir = state_;
    config.reserve_bytes = 0;
    config.overlay_max_bytes = overlay_max_bytes;
    return image_store(config, nullptr);
  }

  libvirt_config driver_config() const {
    libvirt_config lv;
    lv.uri = "test:///default";
    lv.accel = "tcg";
    lv.state_dir = state_;
    lv.kernel = tmp_.path() / "vmlinuz";
    lv.initrd = tmp_.path() / "initrd.img";
    lv.isolate_host = false;
    lv.owner = "overlay-it";
    return lv;
  }

  vm_spec spec(std::string host_id, int disk_gb) const {
    vm_spec s;
    s.host_id = std::move(host_id);
    s.name = "sb-" + s.host_id.substr(0, 8);
    s.image = "registry.test/guest@" + digest_;
    s.image_digest = digest_;
    s.disk_gb = disk_gb;
    s.ssh_username = "agent";
    s.ssh_host = "127.0.0.1";
    s.ssh_port = 1;
    return s;
  }

  temp_dir tmp_;
  fs::path state_ = tmp_.path() / "state";
  std::string digest_ = "sha256:" + std::string(64, 'e');
};

TEST_F(OverlayThroughTheDriver, DiskGbBelowTheImageFailsTheCreateAtOnceAsImageInvalid) {
  auto store = make_store(0);
  image_store_bases bases(store);
  libvirt_driver driver(driver_config(), bases);
  EXPECT_EQ(driver.known_image_bytes("registry.test/guest@" + digest_), 3 * k_gib);

  const std::string id = "0b1c2d3e-0000-4000-8000-000000000001";
  const auto started = std::chrono::steady_clock::now();
  auto r = driver.create_vm(spec(id, 2));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::image_invalid) << r.error().message;
  EXPECT_NE(r.error().message.find("at least 3 GiB"), std::string::npos) << r.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(30));
  EXPECT_FALSE(fs::exists(driver.host_dir(id))) << "a failed create leaves nothing behind";
}

TEST_F(OverlayThroughTheDriver, CreatePastTheOverlayCapFailsAsInsufficientDisk) {
  auto store = make_store(6 * k_gib);
  image_store_bases bases(store);
  libvirt_driver driver(driver_config(), bases);
  // Another host's disk already promises 4 GiB of the 6.
  const std::string other = "0b1c2d3e-0000-4000-8000-0000000000aa";
  fs::create_directories(driver.host_dir(other));
  ASSERT_TRUE(
      store.create_overlay(*store.cached(digest_), driver.host_dir(other) / "disk.qcow2", 4));

  const std::string id = "0b1c2d3e-0000-4000-8000-000000000002";
  auto r = driver.create_vm(spec(id, 3));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::insufficient_disk) << r.error().message;
  EXPECT_NE(r.error().message.find("LITTERBOX_OVERLAY_MAX_GB"), std::string::npos);
  EXPECT_FALSE(fs::exists(driver.host_dir(id)));
  EXPECT_TRUE(fs::exists(driver.host_dir(other) / "disk.qcow2"));
}

}  // namespace
}  // namespace litterbox::hypervisor::image
