#pragma once

#include "base/result.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace litterbox::hypervisor {

/// An OpenSSH key pair: the private half in OpenSSH PEM form, the public half as an
/// authorized_keys line ("ssh-ed25519 AAAA… comment").
struct ssh_key_pair {
  std::string private_openssh;
  std::string public_line;
};

/// Everything a driver needs to build and boot one guest. Built by the control plane; the
/// driver never invents identities, keys or ports itself.
struct vm_spec {
  std::string host_id;       ///< UUID; every resource of the host is named from it
  std::string name;          ///< `sb-…`: the domain name and the guest hostname
  std::string image;         ///< the reference as requested
  std::string image_digest;  ///< resolved by prepare_image
  int cpus = 1;
  int memory_mib = 1024;
  std::optional<int> disk_gb;
  std::string ssh_username;                  ///< login user created in the guest
  std::vector<std::string> authorized_keys;  ///< public lines for the login user
  std::map<std::string, std::string> env;    ///< exported to every session of the login user
  ssh_key_pair host_key;                     ///< the guest's pinned ed25519 host key
  std::string probe_public_key;              ///< the control plane's own probe key
  std::string ready_token;                   ///< per-host secret for the readiness signal
  std::string ssh_host;                      ///< address the forward listens on
  int ssh_port = 0;                          ///< port the forward listens on
};

/// One /doctor check (API.md "Operational endpoints").
struct check_result {
  std::string name;
  bool ok = false;
  std::string detail;
  std::string hint;
  double latency_ms = 0;
};

/// A hypervisor backend. All methods block and are safe to call from several threads at once
/// for different hosts. Errors carry hypervisor::errc codes and messages safe for callers.
class driver {
 public:
  virtual ~driver() = default;

  /// The `provider` name of hosts this driver runs ("libvirt", "fake").
  virtual std::string_view provider() const = 0;

  /// Resolves `image` to its manifest digest and makes the base disk for it available,
  /// pulling and converting unless that digest is cached. Concurrent calls for the same new
  /// digest do the work once. Errors: image_not_found, registry_unavailable, image_corrupt,
  /// image_invalid, insufficient_disk.
  virtual result<std::string> prepare_image(std::string_view image) = 0;

  /// Creates the host's disks and seed, then defines and starts the VM with its SSH forward on
  /// spec.ssh_host:spec.ssh_port. On failure releases whatever it made. Errors:
  /// vm_create_failed, insufficient_disk, unavailable.
  virtual result<void> create_vm(const vm_spec& spec) = 0;

  /// Blocks until the guest has sent its authenticated ready signal and an SSH handshake to
  /// spec.ssh_host:spec.ssh_port presented spec.host_key, or until `deadline`. Errors:
  /// boot_timeout and boot_failed (messages end with the console tail), host_key_mismatch.
  virtual result<void> wait_ready(const vm_spec& spec,
                                  std::chrono::steady_clock::time_point deadline) = 0;

  /// Destroys the VM and every resource named from `host_id`. Idempotent: what is already
  /// gone is success. Errors: teardown_failed, unavailable.
  virtual result<void> destroy(std::string_view host_id) = 0;

  /// The last `max_bytes` of the guest's serial console. Errors: not_found.
  virtual result<std::string> console(std::string_view host_id, std::size_t max_bytes) = 0;

  /// Host ids of every VM or per-host resource this driver made that still exists (domains
  /// carrying our owner tag, disks, seeds, console logs): what an orphan sweep looks at.
  virtual result<std::vector<std::string>> list_owned() = 0;

  /// Removes cached images no host uses (`in_use`: every digest a row references) while the
  /// cache is over its budget. Images prepared recently are kept even when not yet in
  /// `in_use` (a create between prepare_image and recording its digest). Returns how many
  /// were removed.
  virtual result<int> collect_images(const std::set<std::string>& in_use) = 0;

  /// Health checks for /doctor, each time-boxed by the driver.
  virtual std::vector<check_result> doctor() = 0;

  /// Bytes of root disk `image` needs, when known without the network (a reference pinned by
  /// digest whose base is cached), so that a smaller disk_gb is refused at admission; nullopt
  /// otherwise. Never blocks on the network; thread-safe. create_vm refuses such a disk_gb
  /// in any case (image_invalid).
  virtual std::optional<std::uint64_t> known_image_bytes(std::string_view /*image*/) {
    return std::nullopt;
  }
};

}  // namespace litterbox::hypervisor
