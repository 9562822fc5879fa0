#pragma once

#include <string_view>
#include <system_error>

namespace litterbox::hypervisor {

/// Failures a driver reports. Each has a Kind name that prefixes `last_error`
/// ("<Kind>: <message>", API.md) so callers can tell an image problem from a boot problem.
enum class errc {
  image_not_found = 1,   ///< ImageNotFound: the registry has no such repository/tag/digest
  registry_unavailable,  ///< RegistryUnavailable: the registry could not be reached
  image_corrupt,         ///< ImageCorrupt: a blob failed its digest check or would not unpack
  image_invalid,         ///< ImageInvalid: the image lacks systemd, sshd or cloud-init
  insufficient_disk,     ///< InsufficientDisk: not enough free space to convert or create
  vm_create_failed,      ///< VmCreateFailed: disks, seed or domain could not be made/started
  boot_failed,           ///< BootFailed: the guest stopped or reported failure while booting
  boot_timeout,          ///< BootTimeout: the guest did not become ready in time
  host_key_mismatch,     ///< HostKeyMismatch: the SSH endpoint presented another host key
  teardown_failed,       ///< TeardownFailed: a resource could not be released
  unavailable,           ///< HypervisorUnavailable: libvirt (or the backend) is unreachable
  not_found,             ///< NotFound: no such VM or resource (console of an unknown host)
  internal,              ///< InternalError
  clone_unsupported,     ///< CloneUnsupported: the image lacks what cloning needs (guest agent)
  template_missing,      ///< TemplateMissing: no saved template of that id (fall back to a boot)
  port_busy,  ///< PortBusy: the SSH forward's port is bound by something else on this node
};

const std::error_category& category();
inline std::error_code make_error_code(errc e) {
  return {static_cast<int>(e), category()};
}

/// The Kind name of a hypervisor error code ("BootTimeout"); "InternalError" for codes of
/// other categories.
std::string_view kind_name(const std::error_code& code);

}  // namespace litterbox::hypervisor

template <>
struct std::is_error_code_enum<litterbox::hypervisor::errc> : std::true_type {};
