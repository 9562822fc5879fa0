#pragma once

#include "hypervisor/driver.hpp"
#include "hypervisor/guest_listener_sink.hpp"

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>

namespace litterbox::hypervisor {

/// The driver operations a test can slow down, fail or count.
enum class fake_phase {
  resolve_image,
  prepare_image,
  create_vm,
  wait_ready,
  destroy,
  build_template,
  restore_clone,
  apply_login,
  destroy_template,
  vm_states,
  node,  ///< node(): a node that does not answer
};

struct fake_options {
  std::chrono::milliseconds pull_delay{0};
  std::chrono::milliseconds create_delay{0};
  std::chrono::milliseconds boot_delay{0};
  std::chrono::milliseconds destroy_delay{0};
  std::chrono::milliseconds template_delay{0};  ///< build_template, after the boot delay
  std::chrono::milliseconds restore_delay{0};
  std::chrono::milliseconds login_delay{0};
  /// When set, each VM is a file `<state_dir>/<host_id>.vm` and each saved template a file
  /// `<state_dir>/<template_id>.template`, so they outlive a killed process the way libvirt
  /// domains and state files do and crash-recovery tests see real leftovers. The files are
  /// the truth: every driver call reads the directory again, so several processes on one
  /// state dir see each other's VMs and templates as clients of one libvirtd do.
  std::optional<std::filesystem::path> state_dir;
  /// collect_images keeps an image prepared within this long even when no row references it
  /// yet, as the image store's gc_grace does (a create between prepare_image and recording
  /// its digest).
  std::chrono::milliseconds image_grace{std::chrono::hours(1)};
  /// Test hooks, called without the driver's lock: `on_convert` at the end of an image
  /// conversion (after pull_delay), `on_wait` when a prepare_image starts waiting for the
  /// conversion of the same digest another call is doing.
  std::function<void(const std::string& digest)> on_convert;
  std::function<void(const std::string& digest)> on_wait;
  /// Called at the start of each apply_login (after an injected failure), without the lock.
  std::function<void(const std::string& host_id)> on_login;
  /// When set, every VM the driver creates or restores gets a guest proxy endpoint the way
  /// the libvirt driver's per-host link does: a listener on 127.0.0.1 (a port of its own)
  /// handed to this sink, removed again when the VM is destroyed or vanishes, and opened
  /// anew for the VMs a restarted fake finds in `state_dir`. With `state_dir` its
  /// address is also written to `<state_dir>/<host_id>.guest-endpoint` ("127.0.0.1:PORT"),
  /// so black-box tests of litterboxd can connect "from inside" a fake guest.
  guest_listener_sink* guest_listeners = nullptr;
  /// What node() reports: a node roomy enough that no test runs out of it by accident.
  node_info node{"fake:///node", 64, 262144};
};

/// An in-memory hypervisor for tests and `litterboxd serve --hypervisor=fake`. Image
/// references steer failures for black-box use: an image containing `missing` is not found,
/// `corrupt` fails its digest check, `fail-create` cannot start, `fail-boot` never becomes
/// ready, `slow-boot` boots until the deadline, `no-agent` boots but cannot be made a
/// template (clone_unsupported). Host ids must be hex digits and dashes, as for the libvirt
/// driver. tests/contract holds it to the driver contract. Thread-safe.
class fake_driver final : public driver {
 public:
  explicit fake_driver(fake_options options = {});

  std::string_view provider() const override { return "fake"; }
  result<std::string> prepare_image(
      std::string_view image,
      std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt) override;
  result<std::string> resolve_image(std::string_view image) override;
  result<void> create_vm(const vm_spec& spec) override;
  result<void> wait_ready(const vm_spec& spec,
                          std::chrono::steady_clock::time_point deadline) override;
  result<void> destroy(std::string_view host_id) override;
  result<std::string> console(std::string_view host_id, std::size_t max_bytes) override;
  result<std::vector<std::string>> list_owned() override;
  result<int> collect_images(const std::set<std::string>& in_use) override;
  std::vector<check_result> doctor() override;
  result<node_info> node() override;
  result<void> build_template(const template_spec& spec,
                              std::chrono::steady_clock::time_point deadline) override;
  result<void> restore_clone(std::string_view template_id, const vm_spec& spec,
                             std::chrono::steady_clock::time_point deadline) override;
  result<void> apply_login(const vm_spec& spec,
                           std::chrono::steady_clock::time_point deadline) override;
  result<void> destroy_template(std::string_view template_id) override;
  result<std::vector<std::string>> list_templates() override;
  result<std::map<std::string, vm_status>> vm_states() override;
  void watch_vms(std::function<void()> wake) override;

  /// What happens to a VM behind the control plane's back (kill_vm).
  enum class vm_fate { powered_off, crashed, vanished };
  /// Makes the VM of `host_id` stop (it stays defined, shut off), crash (stays defined,
  /// crashed) or vanish (no VM any more, as a transient domain whose QEMU died), then calls
  /// the watch_vms callback. False when there is no such VM.
  bool kill_vm(std::string_view host_id, vm_fate fate);
  /// Simulates a reconnect to the hypervisor: calls the watch_vms callback.
  void reconnected();

  /// Makes every call of `phase` fail with `e` until cleared with nullopt.
  void set_failure(fake_phase phase, std::optional<error> e);
  /// From now on these ports count as bound by something else on this node: create_vm,
  /// restore_clone and build_template of a guest forwarded on one fail with port_busy, as
  /// the libvirt driver's do.
  void set_busy_ports(std::set<int> ports);
  /// Number of calls of `phase` so far (destroy counts calls, not VMs removed).
  int calls(fake_phase phase) const;
  /// Number of image conversions done (prepare_image of a digest not yet cached).
  int conversions() const;
  /// Number of destroy calls that removed a VM which existed.
  int vms_destroyed() const;
  /// Host ids whose VM exists now. These test accessors show what another process on the
  /// same state dir did as of this driver's last call of the driver interface.
  std::set<std::string> live_vms() const;
  /// The VM of `host_id` as it is now (a clone's spec with the login apply_login gave it),
  /// or nullopt.
  std::optional<vm_spec> vm(std::string_view host_id) const;
  /// The template a live VM was restored from, or nullopt for a cold-booted VM or none.
  std::optional<std::string> cloned_from(std::string_view host_id) const;
  /// The guest proxy endpoint of a live VM ("127.0.0.1:PORT"), or nullopt when there is none
  /// (no such VM, or no guest_listeners sink).
  std::optional<std::string> guest_endpoint(std::string_view host_id) const;
  /// The key of a saved template, or nullopt.
  std::optional<template_key> template_of(std::string_view template_id) const;
  /// From now on `image` names `digest` (a tag pushed anew); by default an image's digest is
  /// "sha256:" + sha256(image).
  void retag(std::string image, std::string digest);

 private:
  std::optional<error> injected(fake_phase phase);
  std::optional<error> port_taken(int port) const;
  /// With a state dir, makes vms_ and templates_ what the directory holds now (another
  /// process may have made or destroyed some); keeps the in-memory detail of VMs still there.
  /// Called with mutex_ held.
  void sync_state_dir();
  void wait(std::chrono::milliseconds d) const;
  std::string digest_of(std::string_view image) const;
  /// Opens the guest endpoint of `host_id` and hands it to the sink; a failure to open one
  /// fails the create. Called with mutex_ held.
  result<void> open_guest_endpoint(const std::string& host_id);
  /// Removes the guest endpoint of `host_id` if it has one. Called with mutex_ held.
  void close_guest_endpoint(const std::string& host_id);

  fake_options options_;
  mutable std::mutex mutex_;
  std::map<fake_phase, error> failures_;
  std::set<int> busy_ports_;
  std::map<fake_phase, int> calls_;
  std::map<std::string, std::chrono::steady_clock::time_point> digests_;  ///< → last prepared
  std::set<std::string> converting_;   ///< digests whose conversion is under way
  std::condition_variable converted_;  ///< notified when a conversion ends
  std::map<std::string, vm_spec> vms_;
  std::map<std::string, vm_status> stopped_;     ///< VMs of vms_ that are not running
  std::function<void()> wake_;                   ///< watch_vms
  std::map<std::string, std::string> clone_of_;  ///< host id -> template id
  struct saved_template {
    template_key key;
    std::string ssh_username;
  };
  std::map<std::string, saved_template> templates_;
  std::set<std::string> building_;                ///< template ids whose build_template is running
  std::map<std::string, std::string> retagged_;   ///< image -> digest, set by retag()
  std::map<std::string, std::string> endpoints_;  ///< host id -> "127.0.0.1:PORT"
  int conversions_ = 0;
  int destroyed_ = 0;
};

}  // namespace litterbox::hypervisor
