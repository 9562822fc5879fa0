#pragma once

#include "base/result.hpp"
#include "hypervisor/driver.hpp"

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace litterbox::hypervisor {

/// What a saved template is, written into its directory once its state file is complete.
struct template_info {
  template_key key;
  std::string ssh_username;  ///< the login user the template guest was booted with
  std::string name;          ///< the template guest's domain name (as in its saved XML)
  /// "kvm" or "tcg": what the template guest ran on. A saved state restores only onto the
  /// accelerator (and CPU model) it was saved with, so a driver running the other one treats
  /// the template as missing (LITTERBOX_ACCEL changed, or the host gained or lost KVM).
  std::string accel = "tcg";
};

/// The device layout of template guests. A saved guest can only be restored into the layout it
/// was saved with (libvirt's ABI check), so the info file records it and a template of
/// another layout reads as missing, which makes the control plane rebuild it. 2: the guest
/// proxy NIC (issue 11); 1 (no `layout` line): before it.
inline constexpr int k_template_layout = 2;

/// The `info` file of a template directory: one `key=value` line per field, and the layout.
std::string render_template_info(const template_info& info);
/// Parses an `info` file. Errors: template_missing (unreadable, incomplete, or saved with
/// another layout than k_template_layout).
result<template_info> parse_template_info(std::string_view text);

/// Where a template's files live: <state_dir>/templates/<template id>/.
struct template_paths {
  std::filesystem::path dir;
  std::filesystem::path disk() const { return dir / "disk.qcow2"; }  ///< frozen after save
  std::filesystem::path seed() const { return dir / "seed.iso"; }    ///< zeroed after save
  std::filesystem::path console() const { return dir / "console.log"; }
  std::filesystem::path state() const { return dir / "state.sav"; }  ///< libvirt's save image
  std::filesystem::path info() const { return dir / "info"; }        ///< present: saved
};

/// One file the guest agent writes into a guest: `path` is truncated and gets `content`.
/// A file the agent creates is root's, mode 0600; an existing file keeps owner and mode.
struct guest_file {
  std::string path;
  std::string content;
};

/// Files a template guest is stripped of before its memory is saved: each is truncated to
/// nothing (the agent cannot delete), which leaves the login user's files owned by that user
/// so that a clone's login is written without changing owners. Covers the host keys, the
/// login user's authorized_keys and ~/.ssh/environment, systemd's random seed, cloud-init's
/// copies of the seed (user-data holds the template's host key) and the ready script (its
/// token). `instance_id` is the template guest's cloud-init instance id.
std::vector<std::string> template_scrub_paths(std::string_view ssh_username,
                                              std::string_view instance_id);

/// The files that give a clone the identity of the host of `spec`, in the order they must be
/// written: the host key first (k_host_key_files of them), then machine-id, hostname
/// (/etc/hostname, /etc/hosts, the kernel's) and the login (login_files) last. The saved
/// guest has no host key, so sshd refuses every connection until the key is in; with it in
/// first, the readiness probe's connection can be opened (sshd starts a process for it,
/// which reads the key) while the rest is written, and its handshake runs once all is in
/// place. Nobody can log in before the login, written last. `machine_id` is 32 lowercase hex
/// digits. Errors: vm_create_failed for a spec whose values cannot be written as they are
/// (see validate_login, hostname, key).
result<std::vector<guest_file>> identity_files(const vm_spec& spec, std::string_view machine_id);
/// How many of identity_files' first files are the host key.
inline constexpr std::size_t k_host_key_files = 2;

/// The login user's ~/.ssh/environment and authorized_keys for `spec` (in that order), byte
/// for byte as a cold boot's seed writes them. Errors: vm_create_failed (see validate_login).
result<std::vector<guest_file>> login_files(const vm_spec& spec);

/// The rules the seed renderer applies to a login: user name, one key per line, env keys
/// [A-Za-z_][A-Za-z0-9_]*, values without NUL, CR or LF.
result<void> validate_login(const vm_spec& spec);

}  // namespace litterbox::hypervisor
