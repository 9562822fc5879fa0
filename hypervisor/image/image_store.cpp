#include "hypervisor/image/image_store.hpp"

#include "base/process.hpp"
#include "base/secret.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/image/rootfs.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <signal.h>
#include <sstream>
#include <stdexcept>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

namespace litterbox::hypervisor::image {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr std::uint64_t k_mib = std::uint64_t{1} << 20;
constexpr std::uint64_t k_gib = std::uint64_t{1} << 30;

error internal_error(std::string message) {
  return make_error(errc::internal, std::move(message));
}

std::optional<std::string> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    return std::nullopt;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool write_file_synced(const fs::path& p, std::string_view data) {
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return false;
  }
  bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  ok = ::fsync(fd) == 0 && ok;
  return ::close(fd) == 0 && ok;
}

bool fsync_path(const fs::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return false;
  }
  const bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

std::uint64_t allocated_bytes(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) {
    return 0;
  }
  return static_cast<std::uint64_t>(st.st_blocks * 512);
}

std::optional<std::uint64_t> free_bytes(const fs::path& p) {
  struct statvfs vfs {};
  if (::statvfs(p.c_str(), &vfs) != 0) {
    return std::nullopt;
  }
  return vfs.f_bavail * vfs.f_frsize;
}

std::uint64_t round_up(std::uint64_t v, std::uint64_t unit) {
  return (v + unit - 1) / unit * unit;
}

bool is_index(const json& doc) {
  const auto media = doc.value("mediaType", std::string());
  return doc.contains("manifests") || media == "application/vnd.oci.image.index.v1+json" ||
         media == "application/vnd.docker.distribution.manifest.list.v2+json";
}

// The tool failed for a reason of the local machine; say which tool, not its output.
error tool_failure(std::string_view tool, const process_output& out) {
  if (out.err.find("No space left") != std::string::npos) {
    return make_error(errc::insufficient_disk,
                      std::string(tool) + " ran out of disk space building the base disk");
  }
  if (out.timed_out) {
    return internal_error(std::string(tool) + " did not finish in time");
  }
  return internal_error(std::string(tool) + " failed (exit " + std::to_string(out.exit_code) + ")");
}

}  // namespace

struct image_store::flight {
  bool done = false;
  result<base_image> outcome = base_image{};
  std::condition_variable cv;
};

fs::path modules_dir_for_kernel(const fs::path& kernel, const fs::path& modules_root) {
  std::string name = kernel.filename().string();
  for (std::string_view prefix : {"vmlinuz-", "vmlinux-", "bzImage-"}) {
    if (name.rfind(prefix, 0) == 0) {
      name = name.substr(prefix.size());
      break;
    }
  }
  return modules_root / name;
}

image_store::image_store(store_config config)
    : image_store(config, std::make_shared<skopeo_registry>(
                              skopeo_options{config.insecure_registries, config.auth_file,
                                             config.inspect_timeout, config.pull_timeout})) {}

image_store::image_store(store_config config, std::shared_ptr<registry> registry)
    : config_(std::move(config)), registry_(std::move(registry)) {
  std::error_code ec;
  fs::create_directories(images_dir(), ec);
  if (ec) {
    throw std::runtime_error("cannot create " + images_dir().string() + ": " + ec.message());
  }
  // QEMU runs as another user (libvirt-qemu) and must reach the bases.
  fs::permissions(images_dir(), fs::perms(0755), ec);
  clean_stale_temp_dirs();
}

void image_store::clean_stale_temp_dirs() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(images_dir(), ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(".tmp-", 0) != 0) {
      continue;
    }
    // .tmp-<pid>-<random>: only the owner may still be writing into it.
    const auto dash = name.find('-', 5);
    const long pid = std::strtol(name.substr(5, dash - 5).c_str(), nullptr, 10);
    if (pid > 0 && pid != ::getpid() && ::kill(static_cast<pid_t>(pid), 0) == 0) {
      continue;
    }
    if (pid == ::getpid()) {
      continue;
    }
    fs::remove_all(entry.path(), ec);
  }
}

result<std::string> image_store::resolve(std::string_view text) {
  auto ref = parse_reference(text, config_.default_registry);
  if (!ref) {
    return ref.error();
  }
  ++resolves_;
  auto raw = registry_->fetch_manifest(*ref);
  if (!raw) {
    return raw.error();
  }
  const std::string served = "sha256:" + sha256_hex(*raw);
  if (!ref->digest.empty() && served != ref->digest) {
    return make_error(errc::image_corrupt,
                      ref->canonical() + ": the registry served a manifest with another digest");
  }
  const auto doc = json::parse(*raw, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    return make_error(errc::image_corrupt, ref->canonical() + ": the manifest is not JSON");
  }
  if (doc.value("schemaVersion", 0) != 2) {
    return make_error(errc::image_corrupt,
                      ref->canonical() + ": only schema 2 manifests are supported");
  }
  if (!is_index(doc)) {
    return served;
  }
  const auto& manifests = doc["manifests"];
  std::string best;
  if (manifests.is_array()) {
    for (const auto& m : manifests) {
      const auto platform = m.value("platform", json::object());
      if (platform.value("os", "") != "linux" || platform.value("architecture", "") != "amd64") {
        continue;
      }
      const auto digest = m.value("digest", "");
      if (!is_sha256_digest(digest)) {
        continue;
      }
      // Plain amd64 beats a micro-architecture variant (v2, v3) the guest CPU may lack.
      if (best.empty() || !platform.contains("variant")) {
        best = digest;
      }
      if (!platform.contains("variant")) {
        break;
      }
    }
  }
  if (best.empty()) {
    return make_error(errc::image_invalid,
                      ref->canonical() + ": no linux/amd64 image in the index");
  }
  return best;
}

std::optional<base_image> image_store::cached(std::string_view digest) const {
  if (!is_sha256_digest(digest)) {
    return std::nullopt;
  }
  const fs::path dir = images_dir() / std::string(digest);
  const auto meta_text = read_file(dir / "meta.json");
  if (!meta_text) {
    return std::nullopt;
  }
  const auto meta = json::parse(*meta_text, nullptr, false);
  std::error_code ec;
  if (meta.is_discarded() || !fs::is_regular_file(dir / "base.qcow2", ec)) {
    return std::nullopt;
  }
  base_image out;
  out.digest = std::string(digest);
  out.path = dir / "base.qcow2";
  out.size_bytes = allocated_bytes(out.path);
  out.virtual_bytes = meta.value("virtual_bytes", std::uint64_t{0});
  out.modules_version = meta.value("modules_version", "");
  return out;
}

result<base_image> image_store::ensure_base(std::string_view ref) {
  auto base = find_or_build(ref);
  if (base) {
    const std::lock_guard lock(mutex_);
    last_used_[base->digest] = std::chrono::steady_clock::now();
  }
  return base;
}

result<base_image> image_store::find_or_build(std::string_view text) {
  auto ref = parse_reference(text, config_.default_registry);
  if (!ref) {
    return ref.error();
  }
  // A reference pinned by digest needs no registry when that digest is cached.
  if (!ref->digest.empty()) {
    std::lock_guard lock(mutex_);
    if (auto hit = cached(ref->digest)) {
      ++cache_hits_;
      return *hit;
    }
  }
  auto digest = resolve(text);
  if (!digest) {
    return digest.error();
  }
  std::shared_ptr<flight> f;
  {
    std::unique_lock lock(mutex_);
    if (auto hit = cached(*digest)) {
      ++cache_hits_;
      return *hit;
    }
    if (auto it = flights_.find(*digest); it != flights_.end()) {
      ++waits_;
      f = it->second;
      f->cv.wait(lock, [&] { return f->done; });
      return f->outcome;
    }
    f = std::make_shared<flight>();
    flights_.emplace(*digest, f);
  }
  auto outcome = build(*ref, *digest);
  {
    std::lock_guard lock(mutex_);
    f->outcome = outcome;
    f->done = true;
    flights_.erase(*digest);
  }
  f->cv.notify_all();
  return outcome;
}

result<base_image> image_store::build(const image_ref& ref, const std::string& digest) {
  const fs::path work = images_dir() / (".tmp-" + std::to_string(::getpid()) + "-" + random_hex(8));
  std::error_code ec;
  fs::create_directories(work, ec);
  if (ec) {
    return internal_error("cannot create a build directory: " + ec.message());
  }
  auto out = build_in(ref, digest, work);
  fs::remove_all(work, ec);
  return out;
}

result<base_image> image_store::build_in(const image_ref& ref, const std::string& digest,
                                         const fs::path& work) {
  const std::string subject = ref.registry + "/" + ref.repository + "@" + digest;
  const fs::path pull_dir = work / "pull";
  ++pulls_;
  if (auto pulled = registry_->pull(ref, digest, pull_dir); !pulled) {
    return pulled.error();
  }

  // The manifest is checked against the digest it was asked for; each layer against its own.
  const auto manifest_text = read_file(pull_dir / "manifest.json");
  if (!manifest_text || "sha256:" + sha256_hex(*manifest_text) != digest) {
    return make_error(errc::image_corrupt, subject + ": the manifest does not match its digest");
  }
  const auto manifest = json::parse(*manifest_text, nullptr, false);
  if (manifest.is_discarded() || !manifest.contains("layers") || !manifest["layers"].is_array()) {
    return make_error(errc::image_corrupt, subject + ": the manifest lists no layers");
  }

  const fs::path rootfs = work / "rootfs";
  std::error_code ec;
  fs::create_directory(rootfs, ec);
  fs::permissions(rootfs, fs::perms(0755), ec);
  auto applier = layer_applier::open(rootfs);
  if (!applier) {
    return applier.error();
  }
  for (const auto& layer : manifest["layers"]) {
    const auto layer_digest = layer.value("digest", "");
    const auto media = layer.value("mediaType", "");
    if (!is_sha256_digest(layer_digest) || media.find("tar") == std::string::npos) {
      return make_error(errc::image_corrupt, subject + ": a layer is not a tar archive");
    }
    const fs::path blob = pull_dir / layer_digest.substr(7);
    if (auto applied = applier->apply(blob, layer_digest); !applied) {
      auto e = applied.error();
      e.message = ref.canonical() + ": " + e.message;
      return e;
    }
    // Each layer is read once; dropping it now halves the peak disk use.
    fs::remove(blob, ec);
  }
  if (auto done = applier->finish(); !done) {
    return done.error();
  }
  if (auto valid = validate_rootfs(rootfs); !valid) {
    auto e = valid.error();
    e.message = ref.canonical() + ": " + e.message;
    return e;
  }

  std::string modules_version;
  if (!config_.kernel_modules_dir.empty()) {
    if (!fs::is_directory(config_.kernel_modules_dir, ec)) {
      return internal_error("kernel modules directory " + config_.kernel_modules_dir.string() +
                            " does not exist");
    }
    auto added = add_kernel_modules(rootfs, config_.kernel_modules_dir, config_.module_excludes);
    if (!added) {
      return added.error();
    }
    modules_version = added->first;
  }

  auto size = measure_tree(rootfs);
  if (!size) {
    return size.error();
  }
  // Room for the content, ext4's inode tables and journal, and some slack for the first
  // boot; the guest grows the filesystem to disk_gb itself.
  const std::uint64_t inodes = size->inodes + size->inodes / 4 + 4096;
  const std::uint64_t fs_bytes =
      round_up(size->bytes + size->bytes / 8 + inodes * 256 + 256 * k_mib, 64 * k_mib);
  const auto avail = free_bytes(work);
  const std::uint64_t needed = fs_bytes + size->bytes + config_.reserve_bytes;
  if (!avail || *avail < needed) {
    return make_error(errc::insufficient_disk,
                      "converting " + digest + " needs " + std::to_string(needed / k_mib) +
                          " MiB free in the image cache, " +
                          std::to_string(avail.value_or(0) / k_mib) + " MiB available");
  }

  ++conversions_;
  const fs::path raw = work / "rootfs.ext4";
  { std::ofstream create(raw, std::ios::binary); }
  fs::resize_file(raw, fs_bytes, ec);
  if (ec) {
    return internal_error("cannot size the filesystem image: " + ec.message());
  }
  auto mkfs =
      run_process({"mkfs.ext4", "-q", "-F", "-L", "litterbox-root", "-N", std::to_string(inodes),
                   "-E", "root_owner=0:0", "-d", rootfs.string(), raw.string()},
                  config_.convert_timeout);
  if (!mkfs) {
    return internal_error(mkfs.error().message);
  }
  if (mkfs->exit_code != 0) {
    return tool_failure("mkfs.ext4", *mkfs);
  }
  fs::remove_all(rootfs, ec);

  const fs::path out = work / "out";
  fs::create_directory(out, ec);
  const fs::path base = out / "base.qcow2";
  auto convert = run_process(
      {"qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-W", raw.string(), base.string()},
      config_.convert_timeout);
  if (!convert) {
    return internal_error(convert.error().message);
  }
  if (convert->exit_code != 0) {
    return tool_failure("qemu-img convert", *convert);
  }
  fs::remove(raw, ec);

  const json meta = {
      {"digest", digest},
      {"reference", ref.canonical()},
      {"created", std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count()},
      {"virtual_bytes", fs_bytes},
      {"modules_version", modules_version},
  };
  // Durable before it becomes visible: a crash after the rename must not expose a base whose
  // blocks never reached the disk.
  fs::permissions(base, fs::perms(0444), ec);
  if (!fsync_path(base) || !write_file_synced(out / "meta.json", meta.dump())) {
    return internal_error("cannot write the base disk");
  }
  fs::permissions(out, fs::perms(0755), ec);
  const fs::path final_dir = images_dir() / digest;
  if (::rename(out.c_str(), final_dir.c_str()) != 0 && errno != EEXIST && errno != ENOTEMPTY) {
    return internal_error(std::string("cannot publish the base disk: ") + std::strerror(errno));
  }
  fsync_path(images_dir());
  auto done = cached(digest);
  if (!done) {
    return internal_error("the base disk vanished after it was built");
  }
  return *done;
}

result<void> image_store::create_overlay(const base_image& base, const fs::path& path,
                                         std::optional<int> disk_gb) {
  std::error_code ec;
  if (!fs::is_regular_file(base.path, ec)) {
    return make_error(errc::vm_create_failed, "base disk for " + base.digest + " is not cached");
  }
  const auto avail = free_bytes(path.parent_path());
  if (avail && *avail < 64 * k_mib) {
    return make_error(errc::insufficient_disk, "no room for a new disk overlay");
  }
  std::vector<std::string> argv{
      "qemu-img", "create",           "-q",         "-f", "qcow2", "-F", "qcow2",
      "-b",       base.path.string(), path.string()};
  if (disk_gb && *disk_gb > 0 &&
      static_cast<std::uint64_t>(*disk_gb) * k_gib > base.virtual_bytes) {
    argv.push_back(std::to_string(*disk_gb) + "G");
  }
  auto run = run_process(argv, std::chrono::seconds(60));
  if (!run) {
    return make_error(errc::vm_create_failed, run.error().message);
  }
  if (run->exit_code != 0) {
    fs::remove(path, ec);
    auto e = tool_failure("qemu-img create", *run);
    if (e.code != errc::insufficient_disk) {
      e.code = errc::vm_create_failed;
    }
    return e;
  }
  return {};
}

result<gc_report> image_store::collect_garbage(const std::set<std::string>& in_use) {
  struct entry {
    std::string digest;
    std::int64_t created = 0;
    std::uint64_t bytes = 0;
  };
  std::lock_guard lock(mutex_);
  std::vector<entry> entries;
  gc_report report;
  std::error_code ec;
  for (const auto& d : fs::directory_iterator(images_dir(), ec)) {
    const std::string name = d.path().filename().string();
    if (!is_sha256_digest(name)) {
      continue;
    }
    entry e{name, 0, allocated_bytes(d.path() / "base.qcow2")};
    const auto meta = json::parse(read_file(d.path() / "meta.json").value_or(""), nullptr, false);
    e.created = meta.is_discarded() ? 0 : meta.value("created", std::int64_t{0});
    report.bytes_before += e.bytes;
    entries.push_back(std::move(e));
  }
  if (ec) {
    return internal_error("cannot list the image cache: " + ec.message());
  }
  std::sort(entries.begin(), entries.end(), [](const entry& a, const entry& b) {
    return a.created != b.created ? a.created < b.created : a.digest < b.digest;
  });
  std::uint64_t total = report.bytes_before;
  for (const auto& e : entries) {
    if (total <= config_.size_budget_bytes) {
      break;
    }
    if (in_use.contains(e.digest) || flights_.contains(e.digest)) {
      continue;
    }
    if (const auto used = last_used_.find(e.digest);
        used != last_used_.end() &&
        std::chrono::steady_clock::now() - used->second < config_.gc_grace) {
      continue;
    }
    // Renamed first so that the base stops looking valid in one atomic step.
    const fs::path doomed =
        images_dir() / (".tmp-" + std::to_string(::getpid()) + "-gc-" + random_hex(8));
    if (::rename((images_dir() / e.digest).c_str(), doomed.c_str()) != 0) {
      return internal_error("cannot remove base " + e.digest + ": " + std::strerror(errno));
    }
    fs::remove_all(doomed, ec);
    total -= e.bytes;
    report.removed.push_back(e.digest);
    ++collected_;
  }
  report.bytes_after = total;
  return report;
}

store_stats image_store::stats() const {
  return store_stats{resolves_.load(),   pulls_.load(), conversions_.load(),
                     cache_hits_.load(), waits_.load(), collected_.load()};
}

}  // namespace litterbox::hypervisor::image
