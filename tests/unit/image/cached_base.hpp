#pragma once

#include "base/process.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace litterbox::hypervisor::image::testing {

/// Writes into `images` (<state_dir>/images) a cached base of `digest` as conversion
/// `conversion` would have left it: in <digest>/ with no "conversion" in meta.json for 1 (a
/// litterbox from before conversions were counted), in <digest>.c<N>/ naming it from 2 on. The
/// disk is a blank qcow2 of `virtual_bytes`, unlike anything a conversion makes. Returns its path.
inline std::filesystem::path write_cached_base(const std::filesystem::path& images,
                                               const std::string& digest, int conversion,
                                               std::uint64_t virtual_bytes) {
  const std::filesystem::path dir =
      images / (conversion > 1 ? digest + ".c" + std::to_string(conversion) : digest);
  std::filesystem::create_directories(dir);
  const std::filesystem::path disk = dir / "base.qcow2";
  auto made = run_process(
      {"qemu-img", "create", "-q", "-f", "qcow2", disk.string(), std::to_string(virtual_bytes)},
      std::chrono::seconds(30));
  if (!made || made->exit_code != 0) {
    throw std::runtime_error("qemu-img create failed");
  }
  std::filesystem::permissions(disk, std::filesystem::perms(0444));
  nlohmann::json meta{{"digest", digest}, {"virtual_bytes", virtual_bytes}};
  if (conversion > 1) {
    meta["conversion"] = conversion;
  }
  std::ofstream(dir / "meta.json") << meta.dump();
  return disk;
}

/// The whole content of a file ("" when it cannot be read).
inline std::string file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace litterbox::hypervisor::image::testing
