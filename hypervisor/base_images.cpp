#include "hypervisor/base_images.hpp"

#include "base/process.hpp"
#include "base/secret.hpp"
#include "hypervisor/errc.hpp"

#include <vector>

namespace litterbox::hypervisor {
namespace fs = std::filesystem;

namespace {

constexpr std::chrono::seconds k_qemu_img_timeout{60};

}  // namespace

result<std::string> fixed_base_image::prepare(
    std::string_view /*image*/, std::optional<std::chrono::steady_clock::time_point> /*deadline*/) {
  std::error_code ec;
  if (!fs::is_regular_file(disk_, ec)) {
    return make_error(errc::image_not_found, "base disk " + disk_.string() + " is missing");
  }
  return "sha256:" + sha256_hex(disk_.string());
}

namespace {

// `qemu-img create` of a qcow2 overlay `disk` backed by the qcow2 `backing`, `size` large
// ("" for the backing's size).
result<void> qemu_img_overlay(const fs::path& backing, const fs::path& disk,
                              const std::string& size) {
  std::vector<std::string> argv{"qemu-img",       "create",     "-q",    "-f",
                                "qcow2",          "-F",         "qcow2", "-b",
                                backing.string(), disk.string()};
  if (!size.empty()) {
    argv.push_back(size);
  }
  if (const auto r = run_process(argv, k_qemu_img_timeout);
      !r || r->timed_out || r->exit_code != 0) {
    const bool full = r && r->err.find("No space") != std::string::npos;
    return make_error(full ? errc::insufficient_disk : errc::vm_create_failed,
                      "cannot create the disk overlay: " + process_failure_text(r));
  }
  return {};
}

}  // namespace

result<void> base_images::create_overlay(std::string_view digest, const fs::path& disk,
                                         std::optional<int> disk_gb) {
  auto base = base_disk(digest);
  if (!base) {
    return make_error(errc::vm_create_failed, "no base disk for " + std::string(digest));
  }
  return qemu_img_overlay(*base, disk, disk_gb ? std::to_string(*disk_gb) + "G" : "");
}

result<void> base_images::create_clone_overlay(const fs::path& backing, const fs::path& disk) {
  return qemu_img_overlay(backing, disk, "");
}

result<fs::path> fixed_base_image::base_disk(std::string_view /*digest*/) {
  std::error_code ec;
  if (!fs::is_regular_file(disk_, ec)) {
    return make_error(errc::not_found, "base disk " + disk_.string() + " is missing");
  }
  return disk_;
}

}  // namespace litterbox::hypervisor
