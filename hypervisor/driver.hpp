#pragma once

#include "base/result.hpp"

#include <chrono>
#include <compare>
#include <cstdint>
#include <functional>
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
  /// The node the host is placed on (nodes.id): a fleet_driver runs it there. Empty: the
  /// driver's own node.
  std::string node_id;
};

/// What a template serves: a clone of it can be the host of any vm_spec with this key.
struct template_key {
  std::string image_digest;
  int cpus = 1;
  int memory_mib = 1024;
  std::optional<int> disk_gb;  ///< null: the image's default size

  friend bool operator==(const template_key&, const template_key&) = default;
  friend auto operator<=>(const template_key&, const template_key&) = default;
};

/// The key of the template a host of `spec` could be cloned from.
inline template_key key_of(const vm_spec& spec) {
  return {spec.image_digest, spec.cpus, spec.memory_mib, spec.disk_gb};
}

/// A template to build, chosen by the control plane. `guest` is the cold boot of the template
/// guest exactly as for a host (its host_id is ignored): its key_of() is the template's key,
/// its ssh_username the login user every clone has; name, ssh_host/ssh_port, a throwaway
/// host_key and ready_token serve its own boot only. authorized_keys and env must be empty.
struct template_spec {
  std::string template_id;  ///< UUID; names every resource of the template
  vm_spec guest;
};

/// What a hypervisor node reports of itself.
struct node_info {
  std::string uri;
  int cpus = 0;
  std::int64_t memory_mib = 0;
};

/// One /doctor check (API.md "Operational endpoints").
struct check_result {
  std::string name;
  bool ok = false;
  std::string detail;
  std::string hint;
  double latency_ms = 0;
};

/// How a host's VM is, as the hypervisor sees it.
enum class vm_state {
  running,  ///< running, paused or suspended: the guest exists and may go on
  stopped,  ///< shut off: the guest powered itself off, or someone destroyed it
  crashed,  ///< its QEMU died or the guest crashed
};

/// One VM of the driver's (vm_states).
struct vm_status {
  vm_state state = vm_state::running;
  std::string detail;  ///< what happened, for last_error ("guest powered off", …)
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
  /// digest do the work once. Every step (pull, conversion, waiting for another caller's
  /// build) ends by `deadline` when one is given (the create's: admission + PROVISION_TIMEOUT).
  /// Errors: image_not_found, registry_unavailable, image_corrupt, image_invalid,
  /// insufficient_disk.
  virtual result<std::string> prepare_image(
      std::string_view image,
      std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt) = 0;

  /// The manifest digest `image` names now, always asking the registry (a tag may have
  /// moved) but pulling nothing; bounded by the registry's inspect timeout. For deciding
  /// whether a warm-pool member of that digest can serve a create. Errors: as prepare_image's
  /// resolution (image_not_found, registry_unavailable, image_corrupt, image_invalid).
  virtual result<std::string> resolve_image(std::string_view image) = 0;

  /// Creates the host's disks and seed, then defines and starts the VM with its SSH forward on
  /// spec.ssh_host:spec.ssh_port. On failure releases whatever it made. Errors:
  /// vm_create_failed, insufficient_disk, unavailable, port_busy (something else on this
  /// node has bound spec.ssh_port: another port may work).
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

  /// The node this driver runs guests on, as it reports itself: its URI (what names it in
  /// the nodes table), its logical CPUs and its memory. Errors: unavailable.
  virtual result<node_info> node() = 0;

  /// The ids of the nodes this driver runs guests on, when it drives several (fleet_driver);
  /// empty for a driver of one node, whose id the control plane knows (config::node_id).
  virtual std::vector<std::string> node_ids() const { return {}; }

  /// Bytes of root disk `image` needs, when known without the network (a reference pinned by
  /// digest whose base is cached), so that a smaller disk_gb is refused at admission; nullopt
  /// otherwise. Never blocks on the network; thread-safe. create_vm refuses such a disk_gb
  /// in any case (image_invalid).
  virtual std::optional<std::uint64_t> known_image_bytes(std::string_view /*image*/) {
    return std::nullopt;
  }
  // Templates and clones (issue 9). A template is a guest booted once, stripped of every
  // identity (host keys, login keys, env, random seed, cloud-init data) and saved with its
  // memory; its disk is frozen. A clone is a new host restored from it in about a second.

  /// Cold-boots the template guest, waits until it is ready, strips its identity through the
  /// guest agent and saves its memory state; the template guest is gone afterwards. Replaces
  /// an earlier template of the same id (e.g. the leftovers of an interrupted build); a
  /// concurrent build of the same id fails with vm_create_failed. Blocks for minutes. On
  /// failure releases whatever it made. Errors: clone_unsupported (the image
  /// cannot be cloned; the message says what is missing), vm_create_failed, boot_failed,
  /// boot_timeout, host_key_mismatch, insufficient_disk, unavailable, port_busy.
  virtual result<void> build_template(const template_spec& spec,
                                      std::chrono::steady_clock::time_point deadline) = 0;

  /// Restores a clone of `template_id` as the host of `spec` (its own name, uuid, disk
  /// overlay on the template's frozen disk, SSH forward on spec.ssh_host:ssh_port), then,
  /// before anything else can log in, gives it its own identity: fresh kernel randomness,
  /// the host's clock, spec.host_key, spec.name as hostname, a new machine-id, and
  /// spec.authorized_keys and spec.env (empty: no login at all, e.g. a warm-pool member).
  /// Ready when an SSH handshake presents spec.host_key, as for wait_ready. key_of(spec) and
  /// spec.ssh_username must be the template's. On failure releases the host's resources
  /// (as destroy(spec.host_id)). Errors: template_missing, vm_create_failed, boot_failed,
  /// boot_timeout, host_key_mismatch, insufficient_disk, unavailable, port_busy (as
  /// create_vm's).
  virtual result<void> restore_clone(std::string_view template_id, const vm_spec& spec,
                                     std::chrono::steady_clock::time_point deadline) = 0;

  /// Replaces the login of the running clone spec.host_id with spec.authorized_keys and
  /// spec.env (byte-exact), e.g. when a warm-pool member is claimed, then waits until an SSH
  /// handshake to spec.ssh_host:spec.ssh_port presents spec.host_key, as wait_ready, or until
  /// `deadline`. spec.name, host_key, ssh_host and ssh_port must be the ones the clone was
  /// restored with; its other fields are not used. A failed call may leave the new login in
  /// place: the caller destroys the host. Errors: not_found (no such running host),
  /// boot_failed (the guest agent did not answer or failed, or the guest stopped),
  /// boot_timeout, host_key_mismatch, unavailable.
  virtual result<void> apply_login(const vm_spec& spec,
                                   std::chrono::steady_clock::time_point deadline) = 0;

  /// Removes the template and its files. Running clones are not affected (they keep their
  /// open handle on its disk); restores of it fail with template_missing from then on.
  /// Idempotent. Errors: teardown_failed, unavailable.
  virtual result<void> destroy_template(std::string_view template_id) = 0;

  /// Ids of every template this driver has, saved or being built (for sweeps). Errors:
  /// unavailable.
  virtual result<std::vector<std::string>> list_templates() = 0;

  /// Every host VM of this driver that the hypervisor still knows, by host id, with its
  /// state; a host missing here has no VM at all. For reconciling rows against reality.
  /// Reconnects when the hypervisor connection was lost. Errors: unavailable.
  virtual result<std::map<std::string, vm_status>> vm_states() = 0;

  /// From now on calls `wake` whenever one of the driver's VMs stops, crashes or disappears,
  /// and after every reconnect to the hypervisor (changes while disconnected were not seen).
  /// `wake` runs on a driver thread and must return at once (e.g. notify a condition). It
  /// may be called for changes a vm_states() call then shows nothing new for. Replaces an
  /// earlier callback; an empty function stops the calls.
  virtual void watch_vms(std::function<void()> wake) = 0;
};

}  // namespace litterbox::hypervisor
