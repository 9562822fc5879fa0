#pragma once

#include "base/result.hpp"

#include <cstdint>
#include <ctime>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

namespace litterbox::hypervisor::image {

/// Bounds on what one image may unpack to, summed over all its layers: a small archive of
/// zeros must not fill the disk the cache (and often the database) lives on.
struct unpack_limits {
  std::uint64_t max_bytes = std::uint64_t{8} << 30;  ///< file contents, sparse holes included
  std::uint64_t max_entries = 1'000'000;             ///< files, directories, links and nodes
  /// Unpacking stops with insufficient_disk when the root's filesystem would keep less free.
  std::uint64_t min_free_bytes = 0;
};

/// What applying one layer did.
struct layer_stats {
  std::uint64_t entries = 0;           ///< tar entries read
  std::uint64_t whiteouts = 0;         ///< `.wh.<name>` and opaque markers honoured
  std::uint64_t compressed_bytes = 0;  ///< bytes of the blob read (and hashed)
};

/// Applies OCI layer tarballs, in order, onto a directory on the local disk: whiteouts
/// (`.wh.<name>`) and opaque directories (`.wh..wh..opq`) remove what lower layers made;
/// modes, owners, times, xattrs, symlinks, hard links and device nodes are kept; an entry of
/// another type replaces what was there (a file by a directory and back). Every path is
/// resolved inside the root (openat2 RESOLVE_IN_ROOT), so a hostile layer cannot write
/// outside it through `..` or symlinks, and a whiteout must name a real entry (`.wh.`,
/// `.wh..` and `.wh...` are refused). Owners and device nodes need root (CAP_CHOWN,
/// CAP_MKNOD), so the caller keeps `root` in a directory only it can reach. Not thread-safe;
/// one applier per root.
class layer_applier {
 public:
  /// Opens `root`, an existing directory (normally empty); `limits` bound every layer
  /// applied through this applier together. Errors: internal.
  static result<layer_applier> open(const std::filesystem::path& root, unpack_limits limits = {});

  layer_applier(layer_applier&& other) noexcept;
  layer_applier& operator=(layer_applier&&) = delete;
  layer_applier(const layer_applier&) = delete;
  layer_applier& operator=(const layer_applier&) = delete;
  ~layer_applier();

  /// Applies the layer blob at `blob` (a tar, plain or gzip/zstd/xz-compressed) while
  /// hashing it; the whole blob must hash to `digest` ("sha256:…"). Blocks. Errors:
  /// image_corrupt (digest mismatch, unreadable archive, a path escaping with `..`, a
  /// whiteout without a target), image_invalid (over a limit of `unpack_limits`, naming it),
  /// insufficient_disk (free space fell to min_free_bytes), internal (a write was refused).
  result<layer_stats> apply(const std::filesystem::path& blob, std::string_view digest);

  /// Sets directory modification times, which later entries would otherwise disturb. Call
  /// once after the last layer.
  result<void> finish();

 private:
  layer_applier(int root_fd, unpack_limits limits) : root_fd_(root_fd), limits_(limits) {}
  result<void> count_entry(std::string_view digest);
  result<void> count_bytes(std::string_view digest, std::uint64_t bytes);

  int root_fd_ = -1;
  unpack_limits limits_;
  std::uint64_t entries_ = 0;    // over every layer so far
  std::uint64_t bytes_ = 0;      // file sizes over every layer so far
  std::uint64_t unchecked_ = 0;  // bytes since free space was last looked at
  std::vector<std::pair<std::string, timespec>> dir_times_;
};

/// Refuses a root filesystem that cannot become a litterbox guest: `/sbin/init` must lead
/// (through symlinks inside the root) to systemd, and sshd and cloud-init must be installed.
/// Errors: image_invalid naming everything that is missing.
result<void> validate_rootfs(const std::filesystem::path& root);

/// Ensures `<root>/lib/modules/<version>` exists, where `<version>` is the file name of
/// `modules_dir` (e.g. /lib/modules/6.1.0-18-amd64): when the image lacks it, copies the
/// tree in (hard links when on the same filesystem), skipping sub-paths listed in `excludes`
/// (relative to `modules_dir`, e.g. "kernel/sound"). Returns the version and whether it was
/// added. Errors: internal.
result<std::pair<std::string, bool>> add_kernel_modules(const std::filesystem::path& root,
                                                        const std::filesystem::path& modules_dir,
                                                        const std::vector<std::string>& excludes);

/// Makes `line` (e.g. "169.254.77.1 proxy.litterbox.internal") part of the guest's /etc/hosts
/// (created if the image has none) and of every cloud-init hosts template
/// (/etc/cloud/templates/hosts.*.tmpl), from which manage_etc_hosts rewrites /etc/hosts on
/// every boot; paths resolve inside the root. A file that has the line already is left
/// alone. Errors: internal.
result<void> add_hosts_line(const std::filesystem::path& root, std::string_view line);

/// Size of a tree as ext4 would need it: file bytes rounded up to 4 KiB blocks (hard links
/// counted once), plus one block per directory and symlink, and the number of inodes.
struct tree_size {
  std::uint64_t bytes = 0;
  std::uint64_t inodes = 0;
};
result<tree_size> measure_tree(const std::filesystem::path& root);

}  // namespace litterbox::hypervisor::image
