#pragma once

#include "base/result.hpp"
#include "hypervisor/image/registry.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace litterbox::hypervisor::image {

/// Which conversion (OCI image → base disk) this build performs; meta.json records it
/// ("conversion", absent = 1). Bump it whenever what a conversion writes into a base changes
/// (2: the guest proxy's name in /etc/hosts, issue 11): cached bases of an older conversion
/// are then converted again, once per digest, into a directory of their own. A base is never
/// rewritten or replaced where it lies, because the overlays of running guests and saved
/// templates name it by path as their backing file; the old one goes with a collection once no
/// disk backs onto it.
inline constexpr int k_base_conversion = 2;

/// Configuration of the image store; litterboxd fills it from its own configuration.
struct store_config {
  /// Root of the cache; bases live in <state_dir>/images/<digest>.c<conversion>/ (those of
  /// conversion 1 in <state_dir>/images/<digest>/). Collection reads which of them the guest
  /// disks in overlays_dir and <state_dir>/templates/ still back onto.
  std::filesystem::path state_dir;
  /// Registry for references without one ("alpine" → docker.io/library/alpine).
  std::string default_registry = "docker.io";
  /// host:port of registries reached over plain HTTP (e.g. "127.0.0.1:5000"); no others are.
  std::vector<std::string> insecure_registries;
  /// containers-auth.json(5) with registry credentials; empty = skopeo's default lookup.
  std::filesystem::path auth_file;
  /// The guest kernel's modules (/lib/modules/<version>), added to images that lack them;
  /// empty = add nothing. See modules_dir_for_kernel.
  std::filesystem::path kernel_modules_dir;
  /// Sub-trees of kernel_modules_dir a VM never needs (sound, GPUs, Wi-Fi…): kept out of
  /// every base to keep it small.
  std::vector<std::string> module_excludes = {"kernel/sound",
                                              "kernel/drivers/gpu",
                                              "kernel/drivers/media",
                                              "kernel/drivers/infiniband",
                                              "kernel/drivers/net/wireless",
                                              "kernel/drivers/staging",
                                              "kernel/drivers/iio",
                                              "kernel/drivers/usb",
                                              "kernel/drivers/bluetooth",
                                              "kernel/drivers/isdn",
                                              "kernel/drivers/hwmon"};
  /// Bases no host uses are garbage-collected, oldest first, while the cache is above this.
  std::uint64_t size_budget_bytes = std::uint64_t{20} << 30;
  /// Free space that must remain on the state directory's filesystem after a conversion.
  std::uint64_t reserve_bytes = std::uint64_t{1} << 30;
  std::chrono::seconds inspect_timeout{60};
  std::chrono::seconds pull_timeout{1800};
  std::chrono::seconds convert_timeout{900};
  /// A base built or handed out by ensure_base within this long, by any process sharing the
  /// state directory (the time is stamped on disk), is never collected, even when no row
  /// references it yet (a create between preparing its image and recording the digest).
  std::chrono::seconds gc_grace{3600};
  /// What one image may unpack to, over all its layers (LITTERBOX_IMAGE_MAX_GB,
  /// LITTERBOX_IMAGE_MAX_ENTRIES): a small archive must not be able to fill the disk.
  std::uint64_t max_image_bytes = std::uint64_t{8} << 30;
  std::uint64_t max_image_entries = 1'000'000;
  /// Per-host overlays live in <overlays_dir>/<host>/*.qcow2; empty = <state_dir>/vms.
  std::filesystem::path overlays_dir;
  /// Cap on the sum of the virtual sizes of every overlay there, i.e. on what guests may ever
  /// write (LITTERBOX_OVERLAY_MAX_GB); 0 = the filesystem's size less reserve_bytes.
  std::uint64_t overlay_max_bytes = 0;
};

/// The modules directory matching a kernel image: /boot/vmlinuz-<v> → <modules_root>/<v>.
std::filesystem::path modules_dir_for_kernel(
    const std::filesystem::path& kernel,
    const std::filesystem::path& modules_root = "/lib/modules");

/// A cached, read-only base disk.
struct base_image {
  std::string digest;               ///< manifest digest "sha256:…"
  std::filesystem::path path;       ///< <state_dir>/images/<digest>.c<N>/base.qcow2 (mode 0444)
  std::uint64_t size_bytes = 0;     ///< bytes the qcow2 file occupies
  std::uint64_t virtual_bytes = 0;  ///< size of the disk the guest sees
  std::string modules_version;      ///< kernel modules present in /lib/modules ("" = none)
};

/// What the store has done since it was made; tests assert on these, not on time.
struct store_stats {
  std::uint64_t resolves = 0;     ///< manifest look-ups sent to a registry
  std::uint64_t pulls = 0;        ///< images copied from a registry
  std::uint64_t conversions = 0;  ///< base disks built (mkfs + qemu-img convert)
  std::uint64_t cache_hits = 0;   ///< ensure_base answered from the cache
  std::uint64_t waits = 0;        ///< ensure_base calls that waited for another's build
  std::uint64_t collected = 0;    ///< bases removed by collect_garbage
  std::uint64_t head_hits = 0;    ///< resolves answered by the registry's digest of the tag
};

/// What collect_garbage did.
struct gc_report {
  std::vector<std::string> removed;  ///< digests, least recently used first
  /// Digests whose base of an older conversion was removed (no disk backed onto it any more).
  std::vector<std::string> superseded;
  std::uint64_t bytes_before = 0;
  std::uint64_t bytes_after = 0;
};

/// OCI image → cached qcow2 base disk, once per manifest digest, and per-host overlays on
/// top. Thread-safe; every method blocks (run it off I/O threads). Errors carry
/// hypervisor::errc codes with messages safe to show a caller.
class image_store {
 public:
  /// Prepares <state_dir>/images and removes temporary build directories left by processes
  /// that no longer run. Throws std::runtime_error when the directory cannot be made
  /// (a start-up error).
  image_store(store_config config, std::shared_ptr<registry> registry);
  /// The same with the skopeo registry built from `config`.
  explicit image_store(store_config config);

  /// Resolves `ref` to the digest of its linux/amd64 image manifest (picked from an index
  /// when the reference names one). Always asks the registry, never a cached tag: a tag whose
  /// manifest digest (registry::head_digest) is the one this store last resolved for it
  /// gives the same answer without a full fetch; any other tag, or a registry without that
  /// look-up, is fetched and resolved anew. Errors: image_not_found,
  /// registry_unavailable, image_corrupt (served bytes do not match a pinned digest),
  /// image_invalid (no linux/amd64 image).
  result<std::string> resolve(std::string_view ref);

  /// The base disk for `ref`: resolved, then pulled, verified, flattened, checked, given the
  /// guest kernel's modules, turned into ext4 and qcow2 — unless that digest is cached from
  /// this conversion (k_base_conversion; a base of an older one is converted again beside it).
  /// Concurrent calls for the same new digest do the work once; the others wait for it until
  /// `deadline` (default: as long as one build may take) and then fail with
  /// registry_unavailable. The base is stamped as used on disk, so a collection in any
  /// process sharing the state directory spares it for gc_grace. A failure leaves nothing
  /// behind that looks valid. Errors: image_not_found, registry_unavailable, image_corrupt,
  /// image_invalid, insufficient_disk, internal.
  result<base_image> ensure_base(
      std::string_view ref,
      std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt);

  /// The cached base for `digest` made by this conversion (k_base_conversion), if any. Never
  /// touches the network. (ensure_base falls back to a base of an older conversion only when
  /// this one cannot be made.)
  std::optional<base_image> cached(std::string_view digest) const;

  /// The virtual size of the base `ref` names, when that is known without the network: `ref`
  /// is pinned by digest and that base is cached. For refusing a too small disk_gb at once.
  std::optional<std::uint64_t> known_virtual_bytes(std::string_view ref) const;

  /// Creates a qcow2 overlay at `path` (normally <overlays_dir>/<host>/disk.qcow2) backed by
  /// `base` (nothing is copied), `disk_gb` GiB large, or as large as the base without it.
  /// Refused when `disk_gb` is smaller than the base (image_invalid: the guest would get a
  /// truncated root disk) and when all overlays together would exceed overlay_max_bytes
  /// (insufficient_disk); checked and created under a lock shared by every process.
  /// Errors: image_invalid, insufficient_disk, vm_create_failed.
  result<void> create_overlay(const base_image& base, const std::filesystem::path& path,
                              std::optional<int> disk_gb);

  /// Creates a clone's overlay at `path` on `backing` (a template's frozen qcow2 disk), as
  /// large as it, under the same cap and lock as create_overlay: a clone's disk may grow as
  /// far as any other guest's. Errors: insufficient_disk, vm_create_failed.
  result<void> create_clone_overlay(const std::filesystem::path& backing,
                                    const std::filesystem::path& path);

  /// Removes cached bases whose digest is not in `in_use`, that no build is using and that
  /// were not used within gc_grace, least recently used first, until the cache fits the size
  /// budget. The caller lists every digest a live or provisioning host references. A base of
  /// an older conversion (never handed out again) goes whatever the budget, once its digest is
  /// not in use or no guest disk under overlays_dir or <state_dir>/templates/ backs onto it
  /// (when a disk there cannot be read, it stays while its digest is in use). Holds the cache
  /// lock (images/.lock) against hand-outs in every process. Errors: internal.
  result<gc_report> collect_garbage(const std::set<std::string>& in_use);

  /// Counters since construction.
  store_stats stats() const;

 private:
  result<base_image> find_or_build(std::string_view ref,
                                   std::chrono::steady_clock::time_point deadline);
  /// Stamps `base` as handed out; nullopt when a collection removed it meanwhile.
  std::optional<base_image> mark_used(const base_image& base);
  /// The newest base of `digest` made by an older conversion, if one is cached.
  std::optional<base_image> cached_older(std::string_view digest) const;
  /// `failed` unless it failed as registry_unavailable and an older base of `digest` is cached;
  /// then that base (logged).
  result<base_image> or_older_base(std::string_view digest, result<base_image> failed) const;
  struct flight;

  result<base_image> build(const image_ref& ref, const std::string& digest,
                           std::chrono::steady_clock::time_point deadline);
  result<base_image> build_in(const image_ref& ref, const std::string& digest,
                              const std::filesystem::path& work,
                              std::chrono::steady_clock::time_point deadline);
  result<void> check_download(const image_ref& ref, const std::string& digest,
                              const std::filesystem::path& work);
  result<std::uint64_t> overlay_cap() const;
  std::filesystem::path images_dir() const { return config_.state_dir / "images"; }
  std::filesystem::path overlays_dir() const {
    return config_.overlays_dir.empty() ? config_.state_dir / "vms" : config_.overlays_dir;
  }
  void clean_stale_temp_dirs();

  store_config config_;
  std::shared_ptr<registry> registry_;

  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<flight>> flights_;  // digest → build in progress
  struct resolved_tag {
    std::string manifest;  // digest of the manifest or index the tag named
    std::string image;     // what resolve answered for it
  };
  static constexpr std::size_t k_max_remembered_tags = 1024;
  std::map<std::string, resolved_tag> tags_;  // canonical tag reference → last resolve

  std::atomic<std::uint64_t> resolves_{0};
  std::atomic<std::uint64_t> pulls_{0};
  std::atomic<std::uint64_t> conversions_{0};
  std::atomic<std::uint64_t> cache_hits_{0};
  std::atomic<std::uint64_t> waits_{0};
  std::atomic<std::uint64_t> collected_{0};
  std::atomic<std::uint64_t> head_hits_{0};
};

}  // namespace litterbox::hypervisor::image
