#include "hypervisor/image/image_store.hpp"

#include "base/process.hpp"
#include "base/secret.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/image/rootfs.hpp"
#include "hypervisor/libvirt/domain_xml.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <signal.h>
#include <sstream>
#include <stdexcept>
#include <sys/file.h>
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

// Readers for JSON that a registry or the disk handed us: a missing key or a value of another
// type reads as absent, never as an exception or undefined behaviour.
std::string string_at(const json& obj, const char* key) {
  if (!obj.is_object()) {
    return {};
  }
  const auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::optional<std::uint64_t> uint_at(const json& obj, const char* key) {
  if (!obj.is_object()) {
    return std::nullopt;
  }
  const auto it = obj.find(key);
  if (it == obj.end() || !it->is_number_unsigned()) {
    return std::nullopt;
  }
  return it->get<std::uint64_t>();
}

const json* member_at(const json& obj, const char* key) {
  if (!obj.is_object()) {
    return nullptr;
  }
  const auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

bool is_index(const json& doc) {
  const auto media = string_at(doc, "mediaType");
  return member_at(doc, "manifests") != nullptr ||
         media == "application/vnd.oci.image.index.v1+json" ||
         media == "application/vnd.docker.distribution.manifest.list.v2+json";
}

// An flock(2) on a file, released by the destructor; shared by every process on the host.
class file_lock {
 public:
  file_lock(const fs::path& path, int operation)
      : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
    if (fd_ >= 0 && ::flock(fd_, operation) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  file_lock(const file_lock&) = delete;
  file_lock& operator=(const file_lock&) = delete;
  ~file_lock() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// What this store reads of a qcow2 header: the virtual size and the backing file's name.
struct qcow2_header {
  bool qcow2 = false;  // false: the file is something else (or too short to tell)
  std::uint64_t virtual_bytes = 0;
  std::string backing;  // as written, "" for none
};

// The header of `p`; nullopt (errno set) when it cannot be opened. Fields are big-endian after
// the magic "QFI\xfb": backing file offset at 8, its length at 16, the virtual size at 24.
std::optional<qcow2_header> read_qcow2_header(const fs::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    return std::nullopt;
  }
  std::array<unsigned char, 32> h{};
  qcow2_header out;
  const auto field = [&](std::size_t at, std::size_t bytes) {
    std::uint64_t v = 0;
    for (std::size_t i = at; i < at + bytes; ++i) {
      v = (v << 8U) | h[i];
    }
    return v;
  };
  if (::pread(fd, h.data(), h.size(), 0) == static_cast<ssize_t>(h.size()) && h[0] == 'Q' &&
      h[1] == 'F' && h[2] == 'I' && h[3] == 0xfb) {
    out.qcow2 = true;
    out.virtual_bytes = field(24, 8);
    const std::uint64_t offset = field(8, 8);
    const std::uint64_t length = field(16, 4);
    // QEMU refuses names over 1023 bytes.
    if (offset != 0 && length > 0 && length < 1024) {
      out.backing.resize(length);
      if (::pread(fd, out.backing.data(), length, static_cast<off_t>(offset)) !=
          static_cast<ssize_t>(length)) {
        out.backing.clear();
      }
    }
  }
  ::close(fd);
  return out;
}

std::optional<std::uint64_t> qcow2_virtual_bytes(const fs::path& p) {
  const auto h = read_qcow2_header(p);
  return h && h->qcow2 ? std::optional(h->virtual_bytes) : std::nullopt;
}

// The guest disks one level below `root` (<root>/<host or template>/*.qcow2); false when `root`
// exists but could not be listed fully.
bool list_guest_disks(const fs::path& root, std::vector<fs::path>& out) {
  std::error_code ec;
  fs::directory_iterator dirs(root, ec);
  if (ec) {
    return ec == std::errc::no_such_file_or_directory;
  }
  bool complete = true;
  for (const auto& dir : dirs) {
    std::error_code inner;
    if (!dir.is_directory(inner)) {
      continue;
    }
    for (const auto& f : fs::directory_iterator(dir.path(), inner)) {
      if (f.path().extension() == ".qcow2") {
        out.push_back(f.path());
      }
    }
    complete = complete && !inner;
  }
  return complete;
}

fs::path comparable(const fs::path& p) {
  std::error_code ec;
  auto c = fs::weakly_canonical(p, ec);
  return ec ? p.lexically_normal() : c;
}

// Every file the backing chains of the guest disks under `roots` reach (a clone's reaches its
// template's disk and, through it, the base), as comparable() paths; nullopt when a disk could
// not be read, so what it backs onto is unknown.
std::optional<std::set<fs::path>> backing_files(const std::vector<fs::path>& roots) {
  std::vector<fs::path> disks;
  bool complete = true;
  for (const auto& root : roots) {
    complete = list_guest_disks(root, disks) && complete;
  }
  std::set<fs::path> reached;
  for (const auto& disk : disks) {
    fs::path at = disk;
    // Chains are short (clone → template disk → base); the bound stops a loop of names.
    for (int depth = 0; depth < 16; ++depth) {
      const auto h = read_qcow2_header(at);
      if (!h) {
        // A disk removed meanwhile backs onto nothing; one that cannot be opened might.
        complete = complete && errno == ENOENT;
        break;
      }
      if (!h->qcow2 || h->backing.empty()) {
        break;
      }
      fs::path next = h->backing;
      if (next.is_relative()) {
        next = at.parent_path() / next;  // QEMU reads it relative to the disk naming it
      }
      if (!reached.insert(comparable(next)).second) {
        break;  // the rest of this chain is known already
      }
      at = next;
    }
  }
  if (!complete) {
    return std::nullopt;
  }
  return reached;
}

// Where the base of `digest` made by `conversion` lives: <digest> for conversion 1 (from before
// conversions were counted), <digest>.c<conversion> for the later ones.
std::string base_dir_name(std::string_view digest, int conversion) {
  std::string name(digest);
  if (conversion > 1) {
    name += ".c" + std::to_string(conversion);
  }
  return name;
}

// The digest and conversion a cache entry's directory name stands for; nullopt for anything
// else (build directories, the lock).
std::optional<std::pair<std::string, int>> parse_base_dir_name(std::string_view name) {
  const auto dot = name.find('.');
  const std::string_view digest = name.substr(0, dot);
  if (!is_sha256_digest(digest)) {
    return std::nullopt;
  }
  int conversion = 1;
  if (dot != std::string_view::npos) {
    const std::string_view suffix = name.substr(dot);
    const long n =
        suffix.size() > 2 ? std::strtol(std::string(suffix.substr(2)).c_str(), nullptr, 10) : 0;
    if (n < 2 || n > 1'000'000 || base_dir_name(digest, static_cast<int>(n)) != name) {
      return std::nullopt;
    }
    conversion = static_cast<int>(n);
  }
  return std::pair{std::string(digest), conversion};
}

// The conversion meta.json says made its base; bases from before the field are conversion 1.
int conversion_of(const json& meta) {
  return static_cast<int>(uint_at(meta, "conversion").value_or(1));
}

// The base in `dir` of `digest`, when its meta.json says `conversion` made it.
std::optional<base_image> base_in(const fs::path& dir, std::string_view digest, int conversion) {
  const auto meta_text = read_file(dir / "meta.json");
  if (!meta_text) {
    return std::nullopt;
  }
  const auto meta = json::parse(*meta_text, nullptr, false);
  std::error_code ec;
  if (!meta.is_object() || conversion_of(meta) != conversion ||
      !fs::is_regular_file(dir / "base.qcow2", ec)) {
    return std::nullopt;
  }
  base_image out;
  out.digest = std::string(digest);
  out.path = dir / "base.qcow2";
  out.size_bytes = allocated_bytes(out.path);
  out.virtual_bytes = uint_at(meta, "virtual_bytes").value_or(0);
  out.modules_version = string_at(meta, "modules_version");
  return out;
}

std::uint64_t gib_up(std::uint64_t bytes) {
  return (bytes + k_gib - 1) / k_gib;
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
  const bool by_tag = ref->digest.empty();
  const std::string tag_key = ref->canonical();
  if (by_tag) {
    // The registry says which manifest the tag names now; when that is the manifest this
    // store already resolved, so is the answer (the same bytes give the same image), and the
    // full fetch is saved. A tag that moved is fetched anew below.
    if (auto named = registry_->head_digest(*ref)) {
      const std::lock_guard lock(mutex_);
      if (auto it = tags_.find(tag_key); it != tags_.end() && it->second.manifest == *named) {
        ++head_hits_;
        return it->second.image;
      }
    }
  }
  auto raw = registry_->fetch_manifest(*ref);
  if (!raw) {
    return raw.error();
  }
  const std::string served = "sha256:" + sha256_hex(*raw);
  auto remember = [&](const std::string& image) {
    if (by_tag) {
      const std::lock_guard lock(mutex_);
      if (tags_.size() >= k_max_remembered_tags && tags_.count(tag_key) == 0) {
        tags_.clear();  // references come from requests: the memory stays bounded
      }
      tags_[tag_key] = resolved_tag{served, image};
    }
    return image;
  };
  if (!ref->digest.empty() && served != ref->digest) {
    return make_error(errc::image_corrupt,
                      ref->canonical() + ": the registry served a manifest with another digest");
  }
  const auto doc = json::parse(*raw, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    return make_error(errc::image_corrupt, ref->canonical() + ": the manifest is not JSON");
  }
  if (uint_at(doc, "schemaVersion") != std::uint64_t{2}) {
    return make_error(errc::image_corrupt,
                      ref->canonical() + ": only schema 2 manifests are supported");
  }
  if (!is_index(doc)) {
    return remember(served);
  }
  const json* manifests = member_at(doc, "manifests");
  std::string best;
  if (manifests != nullptr && manifests->is_array()) {
    for (const auto& m : *manifests) {
      const json* platform = member_at(m, "platform");
      if (platform == nullptr || string_at(*platform, "os") != "linux" ||
          string_at(*platform, "architecture") != "amd64") {
        continue;
      }
      const auto digest = string_at(m, "digest");
      if (!is_sha256_digest(digest)) {
        continue;
      }
      // Plain amd64 beats a micro-architecture variant (v2, v3) the guest CPU may lack.
      const bool variant = member_at(*platform, "variant") != nullptr;
      if (best.empty() || !variant) {
        best = digest;
      }
      if (!variant) {
        break;
      }
    }
  }
  if (best.empty()) {
    return make_error(errc::image_invalid,
                      ref->canonical() + ": no linux/amd64 image in the index");
  }
  return remember(best);
}

std::optional<base_image> image_store::cached(std::string_view digest) const {
  if (!is_sha256_digest(digest)) {
    return std::nullopt;
  }
  return base_in(images_dir() / base_dir_name(digest, k_base_conversion), digest,
                 k_base_conversion);
}

std::optional<std::uint64_t> image_store::known_virtual_bytes(std::string_view text) const {
  auto ref = parse_reference(text, config_.default_registry);
  if (!ref || ref->digest.empty()) {
    return std::nullopt;
  }
  auto base = cached(ref->digest);
  if (!base || base->virtual_bytes == 0) {
    return std::nullopt;
  }
  return base->virtual_bytes;
}

result<base_image> image_store::ensure_base(
    std::string_view ref, std::optional<std::chrono::steady_clock::time_point> deadline) {
  const auto until = deadline.value_or(std::chrono::steady_clock::now() + config_.inspect_timeout +
                                       config_.pull_timeout + 2 * config_.convert_timeout);
  // A collection (in any process) between finding the base and stamping it removes it; then
  // it is built again. Twice in a row means something keeps removing it.
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto base = find_or_build(ref, until);
    if (!base) {
      return base;
    }
    if (auto kept = mark_used(*base)) {
      return *kept;
    }
  }
  return internal_error("the base disk for " + std::string(ref) +
                        " was removed by a cache collection as it was handed out");
}

std::optional<base_image> image_store::mark_used(const base_image& found) {
  // Under the cache lock: a collection either ran before (the base is gone) or runs after
  // and sees the stamp. Never taken while holding mutex_ (collect_garbage nests the other way).
  const file_lock lock(images_dir() / ".lock", LOCK_SH);
  std::error_code ec;
  if (!fs::is_regular_file(found.path, ec)) {
    return std::nullopt;
  }
  std::optional<base_image> base = found;
  const fs::path stamp = base->path.parent_path() / "used";
  const int fd = ::open(stamp.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd >= 0) {
    ::futimens(fd, nullptr);  // now
    ::close(fd);
  }
  return base;
}

std::optional<base_image> image_store::cached_older(std::string_view digest) const {
  if (!is_sha256_digest(digest)) {
    return std::nullopt;
  }
  for (int conversion = k_base_conversion - 1; conversion >= 1; --conversion) {
    if (auto base = base_in(images_dir() / base_dir_name(digest, conversion), digest, conversion)) {
      return base;
    }
  }
  return std::nullopt;
}

// A base of an older conversion is the same image without what the newer conversion adds
// (conversion 2: the guest proxy's name in /etc/hosts): better than no guest when the registry
// cannot be reached right after an upgrade. Only then: an image this conversion refuses (a
// check it added) must not slip through on its old base. Collection keeps the old base while a
// disk backs onto it; the next create that can convert replaces it.
result<base_image> image_store::or_older_base(std::string_view digest,
                                              result<base_image> failed) const {
  if (failed || failed.error().code != errc::registry_unavailable) {
    return failed;
  }
  auto older = cached_older(digest);
  if (!older) {
    return failed;
  }
  spdlog::warn("image cache: cannot convert {} again ({}); using its base of an older conversion",
               digest, failed.error().message);
  return *older;
}

result<base_image> image_store::find_or_build(std::string_view text,
                                              std::chrono::steady_clock::time_point deadline) {
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
    return ref->digest.empty() ? digest.error()
                               : or_older_base(ref->digest, result<base_image>(digest.error()));
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
      if (!f->cv.wait_until(lock, deadline, [&] { return f->done; })) {
        return make_error(errc::registry_unavailable,
                          ref->canonical() +
                              ": another create is still pulling and converting this image, "
                              "and it did not finish before this create's deadline");
      }
      return f->outcome;
    }
    f = std::make_shared<flight>();
    flights_.emplace(*digest, f);
  }
  auto outcome = or_older_base(*digest, build(*ref, *digest, deadline));
  {
    std::lock_guard lock(mutex_);
    f->outcome = outcome;
    f->done = true;
    flights_.erase(*digest);
  }
  f->cv.notify_all();
  return outcome;
}

result<base_image> image_store::build(const image_ref& ref, const std::string& digest,
                                      std::chrono::steady_clock::time_point deadline) {
  const fs::path work = images_dir() / (".tmp-" + std::to_string(::getpid()) + "-" + random_hex(8));
  // Private from the start (mkdir's mode, never widened): the tree unpacked below holds the
  // image's setuid files, device nodes and file capabilities with their modes, as root.
  if (::mkdir(work.c_str(), 0700) != 0) {
    return internal_error(std::string("cannot create a build directory: ") + std::strerror(errno));
  }
  auto out = build_in(ref, digest, work, deadline);
  std::error_code ec;
  fs::remove_all(work, ec);
  return out;
}

result<void> image_store::check_download(const image_ref& ref, const std::string& digest,
                                         const fs::path& work) {
  // The manifest says what its layers weigh: refuse what cannot fit before downloading it.
  // A manifest that cannot be had or does not match is left to the pull, which reports it.
  image_ref pinned = ref;
  pinned.digest = digest;
  const auto raw = registry_->fetch_manifest(pinned);
  if (!raw || "sha256:" + sha256_hex(*raw) != digest) {
    return {};
  }
  const auto manifest = json::parse(*raw, nullptr, false);
  const json* layers = member_at(manifest, "layers");
  if (layers == nullptr || !layers->is_array()) {
    return {};
  }
  std::uint64_t compressed = 0;
  for (const auto& layer : *layers) {
    compressed += uint_at(layer, "size").value_or(0);
  }
  // A layer (tar, then compressed) is hardly ever larger compressed than unpacked: over the
  // limit compressed is over it unpacked.
  if (compressed > config_.max_image_bytes) {
    return make_error(errc::image_invalid,
                      pinned.canonical() + ": its layers weigh " +
                          std::to_string(compressed / k_mib) + " MiB compressed, over the " +
                          std::to_string(config_.max_image_bytes / k_mib) +
                          " MiB an image may unpack to (the limit LITTERBOX_IMAGE_MAX_GB)");
  }
  const auto avail = free_bytes(work);
  if (avail && *avail < compressed + config_.reserve_bytes) {
    return make_error(errc::insufficient_disk,
                      "pulling " + digest + " needs " +
                          std::to_string((compressed + config_.reserve_bytes) / k_mib) +
                          " MiB free in the image cache, " + std::to_string(*avail / k_mib) +
                          " MiB available");
  }
  return {};
}

result<base_image> image_store::build_in(const image_ref& ref, const std::string& digest,
                                         const fs::path& work,
                                         std::chrono::steady_clock::time_point deadline) {
  // A conversion gets its own timeout, or what is left of the caller's deadline if less.
  const auto convert_timeout = [&] {
    const auto left = std::chrono::duration_cast<std::chrono::seconds>(
        deadline - std::chrono::steady_clock::now());
    return std::max(std::chrono::seconds(1), std::min(left, config_.convert_timeout));
  };
  const std::string subject = ref.registry + "/" + ref.repository + "@" + digest;
  const fs::path pull_dir = work / "pull";
  if (auto fits = check_download(ref, digest, work); !fits) {
    return fits.error();
  }
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
  const json* layers = member_at(manifest, "layers");
  if (layers == nullptr || !layers->is_array()) {
    return make_error(errc::image_corrupt, subject + ": the manifest lists no layers");
  }

  const fs::path rootfs = work / "rootfs";
  std::error_code ec;
  fs::create_directory(rootfs, ec);
  fs::permissions(rootfs, fs::perms(0755), ec);
  auto applier = layer_applier::open(
      rootfs,
      unpack_limits{config_.max_image_bytes, config_.max_image_entries, config_.reserve_bytes});
  if (!applier) {
    return applier.error();
  }
  for (const auto& layer : *layers) {
    const auto layer_digest = string_at(layer, "digest");
    const auto media = string_at(layer, "mediaType");
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
  // The guest proxy's name (issue 11), resolvable from the first boot without DNS.
  if (auto named = add_hosts_line(rootfs, k_proxy_hosts_line); !named) {
    return named.error();
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
                  convert_timeout());
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
      convert_timeout());
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
      {"conversion", k_base_conversion},
  };
  // Durable before it becomes visible: a crash after the rename must not expose a base whose
  // blocks never reached the disk.
  fs::permissions(base, fs::perms(0444), ec);
  if (!fsync_path(base) || !write_file_synced(out / "meta.json", meta.dump())) {
    return internal_error("cannot write the base disk");
  }
  fs::permissions(out, fs::perms(0755), ec);
  // Beside any base of an older conversion, never over it: guests' disks may back onto that.
  const fs::path final_dir = images_dir() / base_dir_name(digest, k_base_conversion);
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

result<std::uint64_t> image_store::overlay_cap() const {
  if (config_.overlay_max_bytes > 0) {
    return config_.overlay_max_bytes;
  }
  struct statvfs vfs {};
  if (::statvfs(overlays_dir().c_str(), &vfs) != 0) {
    return internal_error("cannot read the size of " + overlays_dir().string() + ": " +
                          std::strerror(errno));
  }
  // Guests may never be promised more than the disk holds; operators who share it with the
  // image cache or a database set a lower cap.
  const std::uint64_t total = vfs.f_blocks * vfs.f_frsize;
  return total > config_.reserve_bytes ? total - config_.reserve_bytes : 0;
}

result<void> image_store::create_overlay(const base_image& base, const fs::path& path,
                                         std::optional<int> disk_gb) {
  std::error_code ec;
  if (!fs::is_regular_file(base.path, ec)) {
    return make_error(errc::vm_create_failed, "base disk for " + base.digest + " is not cached");
  }
  std::uint64_t size = base.virtual_bytes;
  if (disk_gb) {
    const auto wanted = static_cast<std::uint64_t>(std::max(*disk_gb, 0)) * k_gib;
    if (wanted < base.virtual_bytes) {
      return make_error(errc::image_invalid,
                        "disk_gb " + std::to_string(*disk_gb) + " is smaller than the image " +
                            base.digest + ", which needs a disk of at least " +
                            std::to_string(gib_up(base.virtual_bytes)) + " GiB");
    }
    size = wanted;
  }
  const auto avail = free_bytes(path.parent_path());
  if (avail && *avail < 64 * k_mib) {
    return make_error(errc::insufficient_disk, "no room for a new disk overlay");
  }
  // The sum of what every overlay may grow to is checked and the new one made under one lock,
  // so concurrent creates (in any process) cannot each see room for themselves only.
  fs::create_directories(overlays_dir(), ec);
  auto cap = overlay_cap();
  if (!cap) {
    return cap.error();
  }
  const file_lock lock(overlays_dir() / ".overlays.lock", LOCK_EX);
  if (!lock.held()) {
    return make_error(errc::vm_create_failed,
                      "cannot lock " + overlays_dir().string() + ": " + std::strerror(errno));
  }
  std::uint64_t promised = 0;
  std::vector<fs::path> disks;
  (void)list_guest_disks(overlays_dir(), disks);
  for (const auto& disk : disks) {
    if (disk != path) {
      promised += qcow2_virtual_bytes(disk).value_or(0);
    }
  }
  if (promised + size > *cap) {
    return make_error(errc::insufficient_disk, "a " + std::to_string(gib_up(size)) +
                                                   " GiB disk does not fit: the disks of "
                                                   "this host's guests may already grow to " +
                                                   std::to_string(gib_up(promised)) +
                                                   " GiB of the " + std::to_string(*cap / k_gib) +
                                                   " GiB allowed (LITTERBOX_OVERLAY_MAX_GB)");
  }
  std::vector<std::string> argv{
      "qemu-img", "create",           "-q",         "-f", "qcow2", "-F", "qcow2",
      "-b",       base.path.string(), path.string()};
  if (size > base.virtual_bytes) {
    argv.push_back(std::to_string(size));
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

result<void> image_store::create_clone_overlay(const fs::path& backing, const fs::path& path) {
  base_image b;
  b.digest = "the template disk " + backing.string();
  b.path = backing;
  const auto bytes = qcow2_virtual_bytes(backing);
  if (!bytes) {
    return make_error(errc::vm_create_failed, "cannot read the size of " + backing.string());
  }
  b.virtual_bytes = *bytes;
  return create_overlay(b, path, std::nullopt);
}

result<gc_report> image_store::collect_garbage(const std::set<std::string>& in_use) {
  struct entry {
    std::string digest;
    std::string name;            // the directory: base_dir_name of digest and its conversion
    bool superseded = false;     // made by another (older) conversion: never handed out again
    std::int64_t last_used = 0;  // seconds since the epoch: built or last handed out
    std::uint64_t bytes = 0;
  };
  std::lock_guard lock(mutex_);
  gc_report report;
  std::vector<fs::path> doomed;  // renamed under the lock, deleted after it
  std::error_code ec;
  auto removed = [&]() -> result<void> {
    // Exclusive against mark_used in every process sharing the cache: a base being handed out
    // either is stamped before this looks, or finds itself gone and is built again.
    const file_lock cache_lock(images_dir() / ".lock", LOCK_EX);
    if (!cache_lock.held()) {
      return internal_error("cannot lock the image cache: " + std::string(std::strerror(errno)));
    }
    std::vector<entry> entries;
    bool superseded_in_use = false;
    for (const auto& d : fs::directory_iterator(images_dir(), ec)) {
      const std::string name = d.path().filename().string();
      const auto parsed = parse_base_dir_name(name);
      if (!parsed) {
        continue;
      }
      entry e{parsed->first, name, false, 0, allocated_bytes(d.path() / "base.qcow2")};
      const auto meta = json::parse(read_file(d.path() / "meta.json").value_or(""), nullptr, false);
      e.superseded =
          parsed->second != k_base_conversion || conversion_of(meta) != k_base_conversion;
      superseded_in_use = superseded_in_use || (e.superseded && in_use.contains(e.digest));
      const auto created = uint_at(meta, "created").value_or(0);
      e.last_used = static_cast<std::int64_t>(created);
      struct stat st {};
      if (::stat((d.path() / "used").c_str(), &st) == 0) {
        e.last_used = std::max<std::int64_t>(e.last_used, st.st_mtim.tv_sec);
      }
      report.bytes_before += e.bytes;
      entries.push_back(std::move(e));
    }
    if (ec) {
      return internal_error("cannot list the image cache: " + ec.message());
    }
    // A digest in use says nothing of which of its bases the disks back onto: the disks do.
    // nullopt: unknown (a disk could not be read), so every base of a digest in use stays.
    std::optional<std::set<fs::path>> backed;
    if (superseded_in_use) {
      backed = backing_files({overlays_dir(), config_.state_dir / "templates"});
    }
    std::sort(entries.begin(), entries.end(), [](const entry& a, const entry& b) {
      return a.last_used != b.last_used ? a.last_used < b.last_used : a.name < b.name;
    });
    const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
    std::uint64_t total = report.bytes_before;
    // Superseded bases first: what they free may spare a current one the budget would take.
    for (const bool superseded : {true, false}) {
      for (const auto& e : entries) {
        if (e.superseded != superseded || flights_.contains(e.digest) ||
            now - e.last_used < config_.gc_grace.count()) {
          continue;
        }
        if (superseded) {
          // Whatever the budget: no guest is given it again. Kept while a disk may back onto it.
          if (in_use.contains(e.digest) &&
              (!backed || backed->contains(comparable(images_dir() / e.name / "base.qcow2")))) {
            continue;
          }
        } else if (total <= config_.size_budget_bytes || in_use.contains(e.digest)) {
          continue;
        }
        // Renamed first so that the base stops looking valid in one atomic step.
        doomed.push_back(images_dir() /
                         (".tmp-" + std::to_string(::getpid()) + "-gc-" + random_hex(8)));
        if (::rename((images_dir() / e.name).c_str(), doomed.back().c_str()) != 0) {
          return internal_error("cannot remove base " + e.name + ": " + std::strerror(errno));
        }
        total -= e.bytes;
        (superseded ? report.superseded : report.removed).push_back(e.digest);
        ++collected_;
      }
    }
    report.bytes_after = total;
    return {};
  }();
  for (const auto& d : doomed) {
    fs::remove_all(d, ec);
  }
  if (!removed) {
    return removed.error();
  }
  return report;
}

store_stats image_store::stats() const {
  return store_stats{resolves_.load(), pulls_.load(),     conversions_.load(), cache_hits_.load(),
                     waits_.load(),    collected_.load(), head_hits_.load()};
}

}  // namespace litterbox::hypervisor::image
