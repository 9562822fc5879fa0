// The image pipeline on one image against a shell baseline doing the same work (skopeo copy,
// umoci unpack, mkfs.ext4 -d, qemu-img convert), then the cost of a second create.
//   image_bench <reference> <work-dir> [kernel-modules-dir]
// The reference's registry is treated as plain HTTP (a loopback registry).
#include "base/process.hpp"
#include "hypervisor/image/image_store.hpp"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

namespace fs = std::filesystem;
using litterbox::run_process;
using litterbox::hypervisor::image::image_store;
using litterbox::hypervisor::image::store_config;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

bool step(const std::vector<std::string>& argv) {
  auto r = run_process(argv, std::chrono::minutes(30));
  if (!r || r->exit_code != 0) {
    std::fprintf(stderr, "%s failed: %s\n", argv[0].c_str(), r ? r->err.c_str() : "spawn");
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: image_bench <reference> <work-dir> [kernel-modules-dir]\n");
    return 2;
  }
  const std::string ref = argv[1];
  const fs::path work = argv[2];
  const std::string registry = ref.substr(0, ref.find('/'));
  fs::remove_all(work);
  fs::create_directories(work);

  // Pipeline, without kernel modules so it does exactly the baseline's work.
  store_config config;
  config.state_dir = work / "state";
  config.insecure_registries = {registry};
  config.reserve_bytes = 0;
  image_store store(config);
  auto t0 = std::chrono::steady_clock::now();
  auto base = store.ensure_base(ref);
  const double pipeline_s = seconds_since(t0);
  if (!base) {
    std::fprintf(stderr, "pipeline failed: %s\n", base.error().message.c_str());
    return 1;
  }

  // Shell baseline: the same four steps, one tool each, sized like the pipeline.
  t0 = std::chrono::steady_clock::now();
  const fs::path b = work / "baseline";
  fs::create_directories(b);
  const bool baseline_ok =
      step({"skopeo", "copy", "--quiet", "--src-tls-verify=false", "docker://" + ref,
            "oci:" + (b / "oci").string() + ":t"}) &&
      step({"umoci", "unpack", "--image", (b / "oci").string() + ":t", (b / "bundle").string()}) &&
      step({"truncate", "-s", std::to_string(base->virtual_bytes), (b / "rootfs.ext4").string()}) &&
      step({"mkfs.ext4", "-q", "-F", "-d", (b / "bundle/rootfs").string(),
            (b / "rootfs.ext4").string()}) &&
      step({"qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", (b / "rootfs.ext4").string(),
            (b / "base.qcow2").string()});
  const double baseline_s = seconds_since(t0);
  if (!baseline_ok) {
    return 1;
  }

  // With the guest kernel's modules added, as litterboxd runs it.
  double modules_s = 0;
  std::uint64_t modules_size = 0;
  if (argc > 3) {
    store_config with_modules = config;
    with_modules.state_dir = work / "state-modules";
    with_modules.kernel_modules_dir = argv[3];
    image_store store2(with_modules);
    t0 = std::chrono::steady_clock::now();
    auto b2 = store2.ensure_base(ref);
    modules_s = seconds_since(t0);
    modules_size = b2 ? b2->size_bytes : 0;
  }

  // Second create: cache hit plus one overlay.
  const auto before = store.stats();
  t0 = std::chrono::steady_clock::now();
  auto again = store.ensure_base(ref);
  const fs::path overlay = work / "host.qcow2";
  const bool overlay_ok = again && store.create_overlay(*again, overlay, 10);
  const double second_s = seconds_since(t0);
  const auto after = store.stats();
  const auto overlay_bytes = overlay_ok ? fs::file_size(overlay) : 0;

  std::printf("| step | seconds | base size (MiB) |\n|---|---|---|\n");
  std::printf("| litterbox pipeline (pull, verify, flatten, mkfs, qcow2) | %.2f | %.1f |\n",
              pipeline_s, static_cast<double>(base->size_bytes) / 1048576.0);
  std::printf(
      "| shell baseline (skopeo copy, umoci unpack, mkfs.ext4 -d, qemu-img convert) | %.2f "
      "| %.1f |\n",
      baseline_s, static_cast<double>(fs::file_size(b / "base.qcow2")) / 1048576.0);
  std::printf("| ratio pipeline / baseline | %.2f | |\n", pipeline_s / baseline_s);
  if (argc > 3) {
    std::printf("| pipeline + guest kernel modules | %.2f | %.1f |\n", modules_s,
                static_cast<double>(modules_size) / 1048576.0);
  }
  std::printf(
      "| second create (cache hit + overlay) | %.3f | overlay %llu bytes, %llu pulls, "
      "%llu conversions |\n",
      second_s, static_cast<unsigned long long>(overlay_bytes),
      static_cast<unsigned long long>(after.pulls - before.pulls),
      static_cast<unsigned long long>(after.conversions - before.conversions));
  return 0;
}
