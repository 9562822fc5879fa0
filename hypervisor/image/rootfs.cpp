#include "hypervisor/image/rootfs.hpp"

#include "hypervisor/errc.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <array>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <memory>
#include <openssl/evp.h>
#include <optional>
#include <set>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

namespace litterbox::hypervisor::image {
namespace {

namespace fs = std::filesystem;

class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(int fd) : fd_(fd) {}
  unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  bool valid() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

 private:
  int fd_ = -1;
};

error disk_error(std::string_view what, std::string_view path, int err) {
  return make_error(errc::internal,
                    std::string(what) + " " + std::string(path) + ": " + std::strerror(err));
}

error corrupt(std::string_view digest, std::string_view why) {
  return make_error(errc::image_corrupt, "layer " + std::string(digest) + " " + std::string(why));
}

// Resolves `rel` with the root as "/" (symlinks and ".." cannot leave it).
int open_in_root(int root_fd, const std::string& rel, std::uint64_t flags) {
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  const char* p = rel.empty() ? "." : rel.c_str();
  return static_cast<int>(::syscall(SYS_openat2, root_fd, p, &how, sizeof how));
}

std::string fd_path(int fd) {
  return "/proc/self/fd/" + std::to_string(fd);
}

// Splits a tar path into clean components; nullopt when it climbs with "..".
std::optional<std::vector<std::string>> split_path(std::string_view p) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start <= p.size()) {
    const auto end = std::min(p.find('/', start), p.size());
    const auto c = p.substr(start, end - start);
    if (c == "..") {
      return std::nullopt;
    }
    if (!c.empty() && c != ".") {
      parts.emplace_back(c);
    }
    start = end + 1;
  }
  return parts;
}

std::string join(const std::vector<std::string>& parts, std::size_t count) {
  std::string out;
  for (std::size_t i = 0; i < count; ++i) {
    if (i > 0) {
      out += '/';
    }
    out += parts[i];
  }
  return out;
}

// A single name inside a directory: never empty, ".", ".." or a path.
bool is_plain_name(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos;
}

// Removes `name` in `dir_fd` whatever it is; absent is success. Only plain names: "", "."
// or ".." would make remove_all empty the directory itself or its parent.
bool remove_entry(int dir_fd, const std::string& name) {
  if (!is_plain_name(name)) {
    errno = EINVAL;
    return false;
  }
  std::error_code ec;
  fs::remove_all(fs::path(fd_path(dir_fd)) / name, ec);
  return !ec;
}

struct blob_reader {
  int fd = -1;
  EVP_MD_CTX* md = nullptr;
  std::uint64_t bytes = 0;
  bool read_failed = false;
  std::array<char, 1 << 17> buf{};
};

la_ssize_t read_blob(archive* /*a*/, void* client, const void** out) {
  auto* r = static_cast<blob_reader*>(client);
  const ssize_t n = ::read(r->fd, r->buf.data(), r->buf.size());
  if (n < 0) {
    r->read_failed = true;
    return -1;
  }
  EVP_DigestUpdate(r->md, r->buf.data(), static_cast<std::size_t>(n));
  r->bytes += static_cast<std::uint64_t>(n);
  *out = r->buf.data();
  return n;
}

std::string hex(const unsigned char* data, unsigned len) {
  static constexpr std::string_view digits = "0123456789abcdef";
  std::string out;
  out.reserve(std::size_t{len} * 2);
  for (unsigned i = 0; i < len; ++i) {
    out += digits[data[i] >> 4U];
    out += digits[data[i] & 0xfU];
  }
  return out;
}

struct archive_deleter {
  void operator()(archive* a) const { archive_read_free(a); }
};
struct md_deleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

void apply_xattrs(archive_entry* entry, int fd) {
  const char* name = nullptr;
  const void* value = nullptr;
  std::size_t size = 0;
  archive_entry_xattr_reset(entry);
  while (archive_entry_xattr_next(entry, &name, &value, &size) == ARCHIVE_OK) {
    // Best effort, like container runtimes: a filesystem without user xattrs must not
    // fail the image.
    (void)::fsetxattr(fd, name, value, size, 0);
  }
}

}  // namespace

result<layer_applier> layer_applier::open(const fs::path& root, unpack_limits limits) {
  const int fd = ::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return disk_error("cannot open", root.string(), errno);
  }
  return layer_applier(fd, limits);
}

layer_applier::layer_applier(layer_applier&& other) noexcept
    : root_fd_(std::exchange(other.root_fd_, -1)),
      limits_(other.limits_),
      entries_(other.entries_),
      bytes_(other.bytes_),
      unchecked_(other.unchecked_),
      dir_times_(std::move(other.dir_times_)) {}

result<void> layer_applier::count_entry(std::string_view digest) {
  if (++entries_ > limits_.max_entries) {
    return make_error(errc::image_invalid,
                      "layer " + std::string(digest) + " takes the image over " +
                          std::to_string(limits_.max_entries) +
                          " files and directories (the limit LITTERBOX_IMAGE_MAX_ENTRIES)");
  }
  return {};
}

result<void> layer_applier::count_bytes(std::string_view digest, std::uint64_t bytes) {
  constexpr std::uint64_t k_mib = std::uint64_t{1} << 20;
  if (bytes > limits_.max_bytes - std::min(bytes_, limits_.max_bytes)) {
    return make_error(errc::image_invalid,
                      "layer " + std::string(digest) + " takes the image over " +
                          std::to_string(limits_.max_bytes / k_mib) +
                          " MiB of file contents (the limit LITTERBOX_IMAGE_MAX_GB)");
  }
  bytes_ += bytes;
  unchecked_ += bytes;
  // Looking at free space every 64 MiB costs nothing next to writing them.
  if (limits_.min_free_bytes > 0 && unchecked_ >= 64 * k_mib) {
    unchecked_ = 0;
    struct statvfs vfs {};
    if (::fstatvfs(root_fd_, &vfs) == 0 && vfs.f_bavail * vfs.f_frsize < limits_.min_free_bytes) {
      return make_error(errc::insufficient_disk,
                        "unpacking layer " + std::string(digest) + " would leave less than " +
                            std::to_string(limits_.min_free_bytes / k_mib) +
                            " MiB free in the image cache");
    }
  }
  return {};
}

layer_applier::~layer_applier() {
  if (root_fd_ >= 0) {
    ::close(root_fd_);
  }
}

result<layer_stats> layer_applier::apply(const fs::path& blob, std::string_view digest) {
  constexpr std::string_view prefix = "sha256:";
  if (digest.substr(0, prefix.size()) != prefix) {
    return corrupt(digest, "has an unsupported digest algorithm");
  }
  unique_fd blob_fd(::open(blob.c_str(), O_RDONLY | O_CLOEXEC));
  if (!blob_fd.valid()) {
    return corrupt(digest, "is missing from the pulled image");
  }
  std::unique_ptr<EVP_MD_CTX, md_deleter> md(EVP_MD_CTX_new());
  EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr);
  auto reader = std::make_unique<blob_reader>();
  reader->fd = blob_fd.get();
  reader->md = md.get();

  std::unique_ptr<archive, archive_deleter> ar(archive_read_new());
  archive_read_support_filter_all(ar.get());
  archive_read_support_format_tar(ar.get());
  if (archive_read_open(ar.get(), reader.get(), nullptr, read_blob, nullptr) != ARCHIVE_OK) {
    return corrupt(digest, "would not unpack: not a tar archive");
  }

  layer_stats stats;
  std::set<std::string> touched;  // paths this layer made; whiteouts only hit lower layers
  std::vector<std::string> pending_whiteouts;
  archive_entry* entry = nullptr;
  while (true) {
    const int rc = archive_read_next_header(ar.get(), &entry);
    if (rc == ARCHIVE_EOF) {
      break;
    }
    if (rc < ARCHIVE_WARN) {
      return corrupt(digest,
                     std::string("would not unpack: ") +
                         (reader->read_failed ? "read error" : archive_error_string(ar.get())));
    }
    ++stats.entries;
    if (auto counted = count_entry(digest); !counted) {
      return counted.error();
    }
    const char* raw_path = archive_entry_pathname(entry);
    auto parts = split_path(raw_path == nullptr ? "" : raw_path);
    if (!parts) {
      return corrupt(digest, "has a path that climbs out of the root");
    }
    const std::string full = join(*parts, parts->size());
    if (parts->empty()) {
      // The root itself: keep its mode and owner.
      if (::fchownat(root_fd_, "", static_cast<uid_t>(archive_entry_uid(entry)),
                     static_cast<gid_t>(archive_entry_gid(entry)), AT_EMPTY_PATH) != 0 ||
          ::chmod(fd_path(root_fd_).c_str(), archive_entry_perm(entry)) != 0) {
        return disk_error("cannot set owner of", "/", errno);
      }
      continue;
    }
    const std::string name = parts->back();
    const std::string parent_rel = join(*parts, parts->size() - 1);

    // Whiteouts: remove what lower layers made; the marker itself never lands on disk.
    if (name.rfind(".wh.", 0) == 0) {
      // ".wh..wh.*" are markers (the opaque one, aufs' own) rather than a removal; anything
      // else names what to remove, and that must be a real entry: "", "." and ".." would
      // empty the directory or climb to its parent.
      if (name.rfind(".wh..wh.", 0) != 0 && !is_plain_name(std::string_view(name).substr(4))) {
        return corrupt(digest, "has a whiteout that names no entry: " + full);
      }
      ++stats.whiteouts;
      pending_whiteouts.push_back(full);
      continue;
    }

    // Parent: resolved inside the root; made (0755, root) when the layer omits it.
    unique_fd parent(open_in_root(root_fd_, parent_rel, O_PATH | O_DIRECTORY));
    if (!parent.valid()) {
      if (errno != ENOENT) {
        return corrupt(digest, "puts " + full + " under something that is not a directory");
      }
      unique_fd cur(::dup(root_fd_));
      for (std::size_t i = 0; i + 1 < parts->size(); ++i) {
        const std::string sub = join(*parts, i + 1);
        unique_fd next(open_in_root(root_fd_, sub, O_PATH | O_DIRECTORY));
        if (!next.valid()) {
          if (auto counted = count_entry(digest); !counted) {
            return counted.error();
          }
          if (::mkdirat(cur.get(), (*parts)[i].c_str(), 0755) != 0 && errno != EEXIST) {
            return corrupt(digest, "puts " + full + " under something that is not a directory");
          }
          touched.insert(sub);
          next = unique_fd(open_in_root(root_fd_, sub, O_PATH | O_DIRECTORY));
          if (!next.valid()) {
            return disk_error("cannot open", sub, errno);
          }
        }
        cur = std::move(next);
      }
      parent = std::move(cur);
    }
    touched.insert(full);

    const mode_t type = archive_entry_filetype(entry);
    const char* hardlink = archive_entry_hardlink(entry);
    struct stat existing {};
    const bool exists = ::fstatat(parent.get(), name.c_str(), &existing, AT_SYMLINK_NOFOLLOW) == 0;
    const bool keep_dir =
        exists && hardlink == nullptr && type == AE_IFDIR && S_ISDIR(existing.st_mode);
    if (exists && !keep_dir && !remove_entry(parent.get(), name)) {
      return disk_error("cannot replace", full, errno);
    }

    const auto uid = static_cast<uid_t>(archive_entry_uid(entry));
    const auto gid = static_cast<gid_t>(archive_entry_gid(entry));
    const mode_t perm = archive_entry_perm(entry);
    timespec mtime{archive_entry_mtime(entry), archive_entry_mtime_nsec(entry)};
    const std::array<timespec, 2> times{mtime, mtime};

    if (hardlink != nullptr) {
      auto target = split_path(hardlink);
      if (!target || target->empty()) {
        return corrupt(digest, "has a hard link that climbs out of the root");
      }
      unique_fd tparent(
          open_in_root(root_fd_, join(*target, target->size() - 1), O_PATH | O_DIRECTORY));
      if (!tparent.valid() ||
          ::linkat(tparent.get(), target->back().c_str(), parent.get(), name.c_str(), 0) != 0) {
        return corrupt(digest, "links " + full + " to a missing file");
      }
      continue;
    }

    switch (type) {
      case AE_IFREG: {
        const auto declared = archive_entry_size(entry);
        if (declared < 0) {
          return corrupt(digest, "gives " + full + " a negative size");
        }
        if (auto counted = count_bytes(digest, static_cast<std::uint64_t>(declared)); !counted) {
          return counted.error();
        }
        unique_fd out(::openat(parent.get(), name.c_str(),
                               O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!out.valid()) {
          return disk_error("cannot create", full, errno);
        }
        const void* buf = nullptr;
        std::size_t size = 0;
        la_int64_t offset = 0;
        int drc = ARCHIVE_OK;
        while ((drc = archive_read_data_block(ar.get(), &buf, &size, &offset)) == ARCHIVE_OK) {
          // Sparse maps come from the archive: keep every block inside the size counted above.
          if (offset < 0 ||
              static_cast<std::uint64_t>(offset) + size > static_cast<std::uint64_t>(declared)) {
            return corrupt(digest, "writes " + full + " beyond its declared size");
          }
          const auto* p = static_cast<const char*>(buf);
          std::size_t done = 0;
          while (done < size) {
            const ssize_t w =
                ::pwrite(out.get(), p + done, size - done, offset + static_cast<off_t>(done));
            if (w <= 0) {
              return disk_error("cannot write", full, errno);
            }
            done += static_cast<std::size_t>(w);
          }
        }
        if (drc != ARCHIVE_EOF) {
          return corrupt(digest,
                         std::string("would not unpack: ") +
                             (reader->read_failed ? "read error" : archive_error_string(ar.get())));
        }
        // Sparse files may end in a hole.
        if (::ftruncate(out.get(), declared) != 0) {
          return disk_error("cannot write", full, errno);
        }
        apply_xattrs(entry, out.get());
        if (::fchown(out.get(), uid, gid) != 0 || ::fchmod(out.get(), perm) != 0) {
          return disk_error("cannot set owner of", full, errno);
        }
        ::futimens(out.get(), times.data());
        break;
      }
      case AE_IFDIR: {
        if (!keep_dir && ::mkdirat(parent.get(), name.c_str(), 0700) != 0) {
          return disk_error("cannot create", full, errno);
        }
        unique_fd dir(
            ::openat(parent.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!dir.valid()) {
          return disk_error("cannot open", full, errno);
        }
        apply_xattrs(entry, dir.get());
        if (::fchown(dir.get(), uid, gid) != 0 || ::fchmod(dir.get(), perm) != 0) {
          return disk_error("cannot set owner of", full, errno);
        }
        dir_times_.emplace_back(full, mtime);
        break;
      }
      case AE_IFLNK: {
        const char* target = archive_entry_symlink(entry);
        if (::symlinkat(target == nullptr ? "" : target, parent.get(), name.c_str()) != 0) {
          return disk_error("cannot create", full, errno);
        }
        if (::fchownat(parent.get(), name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
          return disk_error("cannot set owner of", full, errno);
        }
        ::utimensat(parent.get(), name.c_str(), times.data(), AT_SYMLINK_NOFOLLOW);
        break;
      }
      case AE_IFCHR:
      case AE_IFBLK:
      case AE_IFIFO: {
        const dev_t dev = makedev(static_cast<unsigned>(archive_entry_rdevmajor(entry)),
                                  static_cast<unsigned>(archive_entry_rdevminor(entry)));
        if (::mknodat(parent.get(), name.c_str(), type | perm, dev) != 0) {
          return disk_error("cannot create", full, errno);
        }
        if (::fchownat(parent.get(), name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0 ||
            ::fchmodat(parent.get(), name.c_str(), perm, 0) != 0) {
          return disk_error("cannot set owner of", full, errno);
        }
        ::utimensat(parent.get(), name.c_str(), times.data(), AT_SYMLINK_NOFOLLOW);
        break;
      }
      default:
        // Sockets and unknown types have no meaning in an image.
        break;
    }
  }

  // Whiteouts apply to lower layers only, so they run after this layer's own entries
  // (tar order inside one layer is arbitrary).
  for (const auto& w : pending_whiteouts) {
    auto parts = split_path(w);
    const std::string name = parts->back();
    const std::string dir_rel = join(*parts, parts->size() - 1);
    unique_fd dir(open_in_root(root_fd_, dir_rel, O_RDONLY | O_DIRECTORY));
    if (!dir.valid()) {
      continue;  // nothing below to hide
    }
    if (name == ".wh..wh..opq") {
      DIR* d = ::fdopendir(::dup(dir.get()));
      if (d == nullptr) {
        return disk_error("cannot list", dir_rel, errno);
      }
      std::vector<std::string> victims;
      while (const dirent* de = ::readdir(d)) {
        const std::string child = de->d_name;
        if (child == "." || child == "..") {
          continue;
        }
        const std::string child_rel = dir_rel.empty() ? child : dir_rel + "/" + child;
        if (!touched.contains(child_rel)) {
          victims.push_back(child);
        }
      }
      ::closedir(d);
      for (const auto& v : victims) {
        if (!remove_entry(dir.get(), v)) {
          return disk_error("cannot remove", dir_rel + "/" + v, errno);
        }
      }
    } else if (name.rfind(".wh..wh.", 0) != 0) {
      const std::string victim = name.substr(4);
      const std::string victim_rel = dir_rel.empty() ? victim : dir_rel + "/" + victim;
      if (!touched.contains(victim_rel) && !remove_entry(dir.get(), victim)) {
        return disk_error("cannot remove", victim_rel, errno);
      }
    }
  }

  // The digest covers the whole blob, including padding after the tar end marker.
  while (true) {
    const ssize_t n = ::read(blob_fd.get(), reader->buf.data(), reader->buf.size());
    if (n < 0) {
      return corrupt(digest, "could not be read back");
    }
    if (n == 0) {
      break;
    }
    EVP_DigestUpdate(md.get(), reader->buf.data(), static_cast<std::size_t>(n));
    reader->bytes += static_cast<std::uint64_t>(n);
  }
  std::array<unsigned char, EVP_MAX_MD_SIZE> sum{};
  unsigned sum_len = 0;
  EVP_DigestFinal_ex(md.get(), sum.data(), &sum_len);
  if (hex(sum.data(), sum_len) != digest.substr(prefix.size())) {
    return corrupt(digest, "does not match its digest");
  }
  stats.compressed_bytes = reader->bytes;
  return stats;
}

result<void> layer_applier::finish() {
  // Deepest first is irrelevant for mtimes of the directories themselves; order kept simple.
  for (const auto& [rel, t] : dir_times_) {
    unique_fd dir(open_in_root(root_fd_, rel, O_PATH | O_DIRECTORY | O_NOFOLLOW));
    if (!dir.valid()) {
      continue;  // removed by a later layer
    }
    const std::array<timespec, 2> times{t, t};
    ::utimensat(AT_FDCWD, fd_path(dir.get()).c_str(), times.data(), 0);
  }
  dir_times_.clear();
  return {};
}

result<void> validate_rootfs(const fs::path& root) {
  unique_fd root_fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root_fd.valid()) {
    return disk_error("cannot open", root.string(), errno);
  }
  auto regular_in_root = [&](const std::string& rel) -> std::optional<fs::path> {
    unique_fd fd(open_in_root(root_fd.get(), rel, O_PATH));
    struct stat st {};
    if (!fd.valid() || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
      return std::nullopt;
    }
    std::error_code ec;
    auto resolved = fs::read_symlink(fd_path(fd.get()), ec);
    return ec ? std::optional<fs::path>() : std::optional<fs::path>(resolved);
  };
  std::vector<std::string> missing;
  const auto init = regular_in_root("sbin/init");
  if (!init || init->filename() != "systemd") {
    missing.emplace_back("systemd (/sbin/init must lead to systemd)");
  }
  if (!regular_in_root("usr/sbin/sshd") && !regular_in_root("sbin/sshd")) {
    missing.emplace_back("sshd (/usr/sbin/sshd)");
  }
  if (!regular_in_root("usr/bin/cloud-init") && !regular_in_root("bin/cloud-init")) {
    missing.emplace_back("cloud-init (/usr/bin/cloud-init)");
  }
  if (missing.empty()) {
    return {};
  }
  std::string msg = "image lacks ";
  for (std::size_t i = 0; i < missing.size(); ++i) {
    msg += (i == 0 ? "" : ", ") + missing[i];
  }
  return make_error(errc::image_invalid, msg);
}

result<std::pair<std::string, bool>> add_kernel_modules(const fs::path& root,
                                                        const fs::path& modules_dir,
                                                        const std::vector<std::string>& excludes) {
  const std::string version = modules_dir.filename().string();
  unique_fd root_fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root_fd.valid()) {
    return disk_error("cannot open", root.string(), errno);
  }
  if (unique_fd have(open_in_root(root_fd.get(), "lib/modules/" + version, O_PATH | O_DIRECTORY));
      have.valid()) {
    return std::pair{version, false};
  }
  // Make lib/modules inside the root (lib is usually a symlink to usr/lib).
  for (const std::string& rel : std::array<std::string, 2>{"lib", "lib/modules"}) {
    unique_fd d(open_in_root(root_fd.get(), rel, O_PATH | O_DIRECTORY));
    if (d.valid()) {
      continue;
    }
    const auto slash = rel.rfind('/');
    unique_fd parent(open_in_root(root_fd.get(),
                                  slash == std::string::npos ? "" : rel.substr(0, slash),
                                  O_PATH | O_DIRECTORY));
    const std::string leaf = slash == std::string::npos ? rel : rel.substr(slash + 1);
    if (!parent.valid() || ::mkdirat(parent.get(), leaf.c_str(), 0755) != 0) {
      return disk_error("cannot create", rel, errno);
    }
  }
  unique_fd mods(open_in_root(root_fd.get(), "lib/modules", O_PATH | O_DIRECTORY));
  std::error_code ec;
  const fs::path dest_base = fs::read_symlink(fd_path(mods.get()), ec);
  if (!mods.valid() || ec) {
    return disk_error("cannot open", "lib/modules", errno);
  }
  const fs::path dest = dest_base / version;
  fs::create_directory(dest, ec);
  if (ec) {
    return disk_error("cannot create", dest.string(), ec.value());
  }
  fs::recursive_directory_iterator it(modules_dir, ec);
  if (ec) {
    return disk_error("cannot read", modules_dir.string(), ec.value());
  }
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) {
      return disk_error("cannot read", modules_dir.string(), ec.value());
    }
    const fs::path rel = it->path().lexically_relative(modules_dir);
    const std::string rel_s = rel.string();
    bool skip = false;
    for (const auto& x : excludes) {
      if (rel_s == x || rel_s.rfind(x + "/", 0) == 0) {
        skip = true;
      }
    }
    if (skip) {
      if (it->is_directory(ec) && !it->is_symlink(ec)) {
        it.disable_recursion_pending();
      }
      continue;
    }
    const fs::path target = dest / rel;
    const auto st = it->symlink_status(ec);
    if (fs::is_symlink(st)) {
      fs::copy_symlink(it->path(), target, ec);
    } else if (fs::is_directory(st)) {
      fs::create_directory(target, it->path(), ec);
    } else if (fs::is_regular_file(st)) {
      // Module files are never written in place, so sharing the host's inodes is safe and
      // saves copying a few hundred MB.
      if (::link(it->path().c_str(), target.c_str()) != 0) {
        fs::copy_file(it->path(), target, ec);
      }
    }
    if (ec) {
      return disk_error("cannot copy", rel_s, ec.value());
    }
  }
  return std::pair{version, true};
}

result<void> add_hosts_line(const fs::path& root, std::string_view line) {
  unique_fd root_fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root_fd.valid()) {
    return disk_error("cannot open", root.string(), errno);
  }
  std::vector<std::string> files{"etc/hosts"};
  if (unique_fd templates(
          open_in_root(root_fd.get(), "etc/cloud/templates", O_RDONLY | O_DIRECTORY));
      templates.valid()) {
    DIR* d = ::fdopendir(templates.get());
    if (d == nullptr) {
      return disk_error("cannot read", "etc/cloud/templates", errno);
    }
    (void)templates.release();
    while (const dirent* e = ::readdir(d)) {
      const std::string_view name = e->d_name;
      if (name.starts_with("hosts.") && name.ends_with(".tmpl")) {
        files.push_back("etc/cloud/templates/" + std::string(name));
      }
    }
    ::closedir(d);
  }
  const std::string wanted = std::string(line) + "\n";
  for (const auto& rel : files) {
    int fd = open_in_root(root_fd.get(), rel, O_RDWR);
    if (fd < 0 && errno == ENOENT && rel == "etc/hosts") {
      unique_fd etc(open_in_root(root_fd.get(), "etc", O_PATH | O_DIRECTORY));
      fd = etc.valid() ? ::openat(etc.get(), "hosts", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644)
                       : -1;
    }
    if (fd < 0) {
      return disk_error("cannot open", rel, errno);
    }
    const unique_fd file(fd);
    std::string text;
    char buf[4096];
    ssize_t n = 0;
    while ((n = ::read(file.get(), buf, sizeof buf)) > 0) {
      text.append(buf, static_cast<std::size_t>(n));
    }
    if (n < 0) {
      return disk_error("cannot read", rel, errno);
    }
    if (text.starts_with(wanted) || text.find("\n" + wanted) != std::string::npos) {
      continue;
    }
    const std::string add = (text.empty() || text.back() == '\n' ? "" : "\n") + wanted;
    if (::lseek(file.get(), 0, SEEK_END) < 0 ||
        ::write(file.get(), add.data(), add.size()) != static_cast<ssize_t>(add.size())) {
      return disk_error("cannot write", rel, errno);
    }
  }
  return {};
}

result<tree_size> measure_tree(const fs::path& root) {
  tree_size out;
  std::set<std::pair<dev_t, ino_t>> seen;
  std::error_code ec;
  fs::recursive_directory_iterator it(root, ec);
  if (ec) {
    return disk_error("cannot read", root.string(), ec.value());
  }
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) {
      return disk_error("cannot read", root.string(), ec.value());
    }
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) {
      continue;
    }
    if (st.st_nlink > 1 && !S_ISDIR(st.st_mode) && !seen.emplace(st.st_dev, st.st_ino).second) {
      continue;
    }
    ++out.inodes;
    const auto size = S_ISREG(st.st_mode) ? static_cast<std::uint64_t>(st.st_size) : 0;
    out.bytes += (size + 4095) / 4096 * 4096 + (S_ISREG(st.st_mode) ? 0 : 4096);
  }
  return out;
}

}  // namespace litterbox::hypervisor::image
