#pragma once

#include "base/result.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace litterbox::hypervisor {

/// Where base disks come from: the image pipeline, behind a narrow interface so the driver
/// can be tested with a fixed disk.
class base_images {
 public:
  virtual ~base_images() = default;
  /// Resolves `image` and makes its base disk available; returns the manifest digest.
  /// Blocks, at most until `deadline` when one is given. Errors: the image pipeline's
  /// hypervisor::errc codes.
  virtual result<std::string> prepare(
      std::string_view image,
      std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt) = 0;
  /// The digest `image` names now, pulling nothing (see driver::resolve_image). Default: what
  /// prepare() returns, for sources whose prepare is cheap.
  virtual result<std::string> resolve(std::string_view image) { return prepare(image); }
  /// The read-only qcow2 base disk of a prepared digest. Errors: not_found.
  virtual result<std::filesystem::path> base_disk(std::string_view digest) = 0;
  /// Removes bases no host uses while over budget (see driver::collect_images); returns how
  /// many were removed.
  virtual result<int> collect(const std::set<std::string>& in_use) = 0;
  /// See driver::known_image_bytes. Default: never known.
  virtual std::optional<std::uint64_t> known_size(std::string_view /*image*/) {
    return std::nullopt;
  }
  /// Creates the host's qcow2 overlay `disk` on the base of `digest`, `disk_gb` GiB large (the
  /// base's size without it). Blocks. Errors: image_invalid (disk_gb smaller than the base),
  /// insufficient_disk, vm_create_failed. Default: qemu-img on base_disk(), without checks.
  virtual result<void> create_overlay(std::string_view digest, const std::filesystem::path& disk,
                                      std::optional<int> disk_gb);
  /// Creates a clone's qcow2 overlay `disk` on `backing` (a template's frozen qcow2 disk), as
  /// large as it, under the limits create_overlay applies (LITTERBOX_OVERLAY_MAX_GB: clones
  /// count like every other guest). Blocks. Errors: insufficient_disk, vm_create_failed.
  /// Default: qemu-img, without checks.
  virtual result<void> create_clone_overlay(const std::filesystem::path& backing,
                                            const std::filesystem::path& disk);
};

/// A single pre-built base disk served for every image reference: for development and tests
/// before an image pipeline is wired in. The digest is derived from the disk's path.
class fixed_base_image final : public base_images {
 public:
  explicit fixed_base_image(std::filesystem::path disk) : disk_(std::move(disk)) {}
  result<std::string> prepare(
      std::string_view image,
      std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt) override;
  result<std::filesystem::path> base_disk(std::string_view digest) override;
  result<int> collect(const std::set<std::string>& /*in_use*/) override { return 0; }

 private:
  std::filesystem::path disk_;
};

}  // namespace litterbox::hypervisor
