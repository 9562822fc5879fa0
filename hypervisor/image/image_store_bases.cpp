#include "hypervisor/image/image_store_bases.hpp"

#include "hypervisor/errc.hpp"

#include <spdlog/spdlog.h>

namespace litterbox::hypervisor::image {

result<std::string> image_store_bases::prepare(
    std::string_view image, std::optional<std::chrono::steady_clock::time_point> deadline) {
  auto base = store_.ensure_base(image, deadline);
  if (!base) {
    return base.error();
  }
  return base->digest;
}

result<std::filesystem::path> image_store_bases::base_disk(std::string_view digest) {
  auto base = store_.cached(digest);
  if (!base) {
    return make_error(errc::not_found, "no cached base image for " + std::string(digest));
  }
  return base->path;
}

std::optional<std::uint64_t> image_store_bases::known_size(std::string_view image) {
  return store_.known_virtual_bytes(image);
}

result<void> image_store_bases::create_overlay(std::string_view digest,
                                               const std::filesystem::path& disk,
                                               std::optional<int> disk_gb) {
  auto base = store_.cached(digest);
  if (!base) {
    return make_error(errc::vm_create_failed, "no cached base image for " + std::string(digest));
  }
  return store_.create_overlay(*base, disk, disk_gb);
}

result<void> image_store_bases::create_clone_overlay(const std::filesystem::path& backing,
                                                     const std::filesystem::path& disk) {
  return store_.create_clone_overlay(backing, disk);
}

result<int> image_store_bases::collect(const std::set<std::string>& in_use) {
  auto report = store_.collect_garbage(in_use);
  if (!report) {
    return report.error();
  }
  for (const auto& digest : report->removed) {
    spdlog::info("image cache: removed unused base {}", digest);
  }
  for (const auto& digest : report->superseded) {
    spdlog::info("image cache: removed the base of {} from an older conversion", digest);
  }
  return static_cast<int>(report->removed.size() + report->superseded.size());
}

}  // namespace litterbox::hypervisor::image
