#pragma once

#include "base/result.hpp"

#include <filesystem>
#include <string>
#include <string_view>

namespace litterbox::hypervisor {

/// How guests execute: hardware KVM, or QEMU's TCG emulator.
enum class accel { kvm, tcg };

/// XML namespace of our domain metadata; a domain carrying it is one of ours.
inline constexpr std::string_view k_metadata_ns = "https://litterbox.dev/xmlns/domain/1";

/// Everything the domain XML says; all names and paths are derived from the host id by the
/// caller.
struct domain_spec {
  std::string name;     ///< domain name (`sb-…`)
  std::string host_id;  ///< written into the metadata
  /// A template guest (issue 9): host_id is the template id, tagged <lb:template-id> instead
  /// of <lb:host-id> so that nothing that sweeps hosts ever takes it for one. It also gets a
  /// virtio balloon with free page reporting, so that freed guest memory is not saved.
  bool is_template = false;
  std::string owner;  ///< owner tag in the metadata (which deployment made it)
  accel acceleration = accel::tcg;
  int vcpus = 1;
  int memory_mib = 1024;
  std::filesystem::path kernel;
  std::filesystem::path initrd;
  std::string cmdline;            ///< full kernel command line
  std::filesystem::path disk;     ///< the host's qcow2 overlay (vda)
  std::filesystem::path seed;     ///< NoCloud cidata image (vdb, read-only)
  std::filesystem::path console;  ///< serial console output file
  std::string ssh_host;           ///< IPv4 literal the SSH forward listens on
  int ssh_port = 0;               ///< port the SSH forward listens on
  bool restrict_network = false;  ///< no outbound traffic at all, only the SSH forward
  /// Host-side tap of the guest proxy NIC (proxy_tap_name); "" renders no proxy NIC.
  std::string proxy_tap;
};

/// The guest proxy NIC (issue 11, docs/design/guest-proxy.md): a virtio NIC on a tap of its
/// own, the same MAC in every guest (each tap is its own link), in the PCI slot after the
/// user-mode NIC's so that it enumerates second.
inline constexpr std::string_view k_proxy_mac = "52:54:00:77:00:02";
/// QEMU's default MAC, which the user-mode NIC keeps; guests match their NICs by MAC.
inline constexpr std::string_view k_slirp_mac = "52:54:00:12:34:56";
/// PCI slots on pci.0: libvirt assigns its own devices from the lowest free slot upwards
/// (slot 2 goes to the first of them), so both NICs sit at the top.
inline constexpr int k_slirp_pci_slot = 0x1e;
inline constexpr int k_proxy_pci_slot = 0x1f;

/// The guest's side of the proxy link has 169.254.77.2/30; the name resolves through
/// /etc/hosts (image conversion writes this line there and into cloud-init's template).
inline constexpr std::string_view k_proxy_hosts_line = "169.254.77.1 proxy.litterbox.internal";

/// The tap name of the proxy NIC of host (or template) `host_id`: "lbp" and the last 12 hex
/// digits of the id (the random part of a UUIDv7; its first 12 are a timestamp). Fits
/// IFNAMSIZ. "" for an id with fewer than 12 hex digits.
std::string proxy_tap_name(std::string_view host_id);

/// The kernel command line for a guest booted from a root filesystem on /dev/vda: serial
/// console, the NoCloud datasource, and arguments that shorten boots.
std::string default_cmdline();

/// `accel` setting ("auto", "kvm", "tcg") resolved against whether the host has hardware KVM.
/// Errors: hypervisor::errc::unavailable for an unknown setting or "kvm" without hardware.
result<accel> choose_accel(std::string_view setting, bool hardware_kvm);

/// True if the kernel under `sys_module` (normally /sys/module) has kvm_intel or kvm_amd
/// loaded; a paravirtual KVM (kvm_pvm) does not count.
bool host_has_hardware_kvm(const std::filesystem::path& sys_module = "/sys/module");

/// The libvirt domain XML for `spec`. Pure and deterministic; every value is XML-escaped.
/// Networking is QEMU user-mode with the SSH forward passed as a `qemu:commandline` netdev so
/// the forward exists from the moment QEMU starts (libvirt 9.0 has no portForward for user
/// interfaces) and `restrict=on` can be expressed. Errors: vm_create_failed for a spec that
/// cannot be rendered (non-IPv4 ssh_host, port out of range, bad sizes).
result<std::string> render_domain_xml(const domain_spec& spec);

/// The template id from the metadata element of a template guest's domain (as
/// virDomainGetMetadata returns it), or "" if it is not one of `owner`'s templates.
std::string metadata_template_id(std::string_view metadata_xml, std::string_view owner);

/// Reads the host id from a domain XML rendered by render_domain_xml (our metadata element),
/// or "" if the XML carries no metadata of ours or another owner tag than `owner`.
std::string owned_host_id(std::string_view domain_xml, std::string_view owner);

/// The same for the metadata element alone, as virDomainGetMetadata returns it for our
/// namespace (libvirt drops the namespace declaration there).
std::string metadata_host_id(std::string_view metadata_xml, std::string_view owner);

/// `text` with &, <, >, ' and " replaced by entities.
std::string xml_escape(std::string_view text);

}  // namespace litterbox::hypervisor
