#pragma once

#include "hypervisor/base_images.hpp"
#include "hypervisor/image/image_store.hpp"

namespace litterbox::hypervisor::image {

/// The libvirt driver's base disks, from the image pipeline: what litterboxd wires in.
/// Thread-safe as the image store is.
class image_store_bases final : public base_images {
 public:
  explicit image_store_bases(image_store& store) : store_(store) {}

  result<std::string> prepare(
      std::string_view image,
      std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt) override;
  result<std::string> resolve(std::string_view image) override { return store_.resolve(image); }
  result<std::filesystem::path> base_disk(std::string_view digest) override;
  std::optional<std::uint64_t> known_size(std::string_view image) override;
  result<void> create_overlay(std::string_view digest, const std::filesystem::path& disk,
                              std::optional<int> disk_gb) override;
  result<void> create_clone_overlay(const std::filesystem::path& backing,
                                    const std::filesystem::path& disk) override;
  result<int> collect(const std::set<std::string>& in_use) override;

 private:
  image_store& store_;
};

}  // namespace litterbox::hypervisor::image
