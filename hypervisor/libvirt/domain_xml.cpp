#include "hypervisor/libvirt/domain_xml.hpp"

#include "hypervisor/errc.hpp"

#include <arpa/inet.h>
#include <system_error>

namespace litterbox::hypervisor {
namespace fs = std::filesystem;
namespace {

bool is_ipv4_literal(const std::string& host) {
  in_addr addr{};
  return inet_pton(AF_INET, host.c_str(), &addr) == 1;
}

std::string element(std::string_view name, std::string_view value) {
  return "<" + std::string(name) + ">" + xml_escape(value) + "</" + std::string(name) + ">";
}

// The text between <tag> and </tag> (first occurrence), unescaped only for what xml_escape
// produces; our host ids and owner tags never need it.
std::string_view between(std::string_view xml, std::string_view open, std::string_view close) {
  const auto a = xml.find(open);
  if (a == std::string_view::npos) {
    return {};
  }
  const auto start = a + open.size();
  const auto b = xml.find(close, start);
  if (b == std::string_view::npos) {
    return {};
  }
  return xml.substr(start, b - start);
}

std::string pci_slot(int slot) {
  static constexpr std::string_view k_hex = "0123456789abcdef";
  std::string s = "0x";
  s += k_hex[static_cast<unsigned>(slot) >> 4U & 0xfU];
  s += k_hex[static_cast<unsigned>(slot) & 0xfU];
  return s;
}

}  // namespace

std::string proxy_tap_name(std::string_view host_id) {
  std::string hex;
  for (auto it = host_id.rbegin(); it != host_id.rend() && hex.size() < 12; ++it) {
    const char c = *it;
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) {
      hex.insert(hex.begin(), c);
    } else if (c >= 'A' && c <= 'F') {
      hex.insert(hex.begin(), static_cast<char>(c - 'A' + 'a'));
    }
  }
  return hex.size() == 12 ? "lbp" + hex : std::string();
}

std::string xml_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '\'':
        out += "&apos;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string default_cmdline() {
  // quiet: every kernel line costs real time on an emulated UART. mitigations=off: the
  // guest runs only its owner's code, and the mitigations are expensive under TCG.
  // panic=-1 reboots on panic, which on_reboot=destroy turns into a dead domain that
  // wait_ready reports at once instead of timing out.
  return "root=/dev/vda rw console=ttyS0 ds=nocloud net.ifnames=0 quiet loglevel=3 "
         "mitigations=off panic=-1 systemd.show_status=false";
}

result<accel> choose_accel(std::string_view setting, bool hardware_kvm) {
  if (setting == "tcg") {
    return accel::tcg;
  }
  if (setting == "kvm") {
    if (!hardware_kvm) {
      return make_error(errc::unavailable,
                        "LITTERBOX_ACCEL=kvm but kvm_intel/kvm_amd is not loaded on this host");
    }
    return accel::kvm;
  }
  if (setting == "auto" || setting.empty()) {
    return hardware_kvm ? accel::kvm : accel::tcg;
  }
  return make_error(errc::unavailable, "LITTERBOX_ACCEL must be auto, kvm or tcg");
}

bool host_has_hardware_kvm(const fs::path& sys_module) {
  std::error_code ec;
  return fs::exists(sys_module / "kvm_intel", ec) || fs::exists(sys_module / "kvm_amd", ec);
}

result<std::string> render_domain_xml(const domain_spec& spec) {
  if (!is_ipv4_literal(spec.ssh_host)) {
    return make_error(errc::vm_create_failed, "ssh_host must be an IPv4 address literal");
  }
  if (spec.ssh_port <= 0 || spec.ssh_port > 65535) {
    return make_error(errc::vm_create_failed, "ssh_port out of range");
  }
  if (spec.vcpus <= 0 || spec.memory_mib <= 0 || spec.name.empty() || spec.host_id.empty()) {
    return make_error(errc::vm_create_failed, "domain needs a name, host id, cpus and memory");
  }
  const bool kvm = spec.acceleration == accel::kvm;
  std::string x;
  x += "<domain type='";
  x += kvm ? "kvm" : "qemu";
  x += "' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n";
  x += "  " + element("name", spec.name) + "\n";
  x += "  <genid/>\n";
  x += "  <metadata>\n";
  x += "    <lb:litterbox xmlns:lb='" + std::string(k_metadata_ns) + "'>";
  const std::string id_element = spec.is_template ? "lb:template-id" : "lb:host-id";
  x += "<" + id_element + ">" + xml_escape(spec.host_id) + "</" + id_element + ">";
  x += "<lb:owner>" + xml_escape(spec.owner) + "</lb:owner>";
  x += "</lb:litterbox>\n";
  x += "  </metadata>\n";
  x += "  <memory unit='MiB'>" + std::to_string(spec.memory_mib) + "</memory>\n";
  x += "  <vcpu>" + std::to_string(spec.vcpus) + "</vcpu>\n";
  x += "  <os>\n";
  x += "    <type arch='x86_64' machine='pc'>hvm</type>\n";
  x += "    " + element("kernel", spec.kernel.string()) + "\n";
  x += "    " + element("initrd", spec.initrd.string()) + "\n";
  x += "    " + element("cmdline", spec.cmdline) + "\n";
  x += "  </os>\n";
  x += "  <features><acpi/></features>\n";
  x += kvm ? "  <cpu mode='host-passthrough'/>\n" : "  <cpu mode='maximum'/>\n";
  x += "  <clock offset='utc'/>\n";
  x += "  <on_poweroff>destroy</on_poweroff>\n";
  x += "  <on_reboot>destroy</on_reboot>\n";
  x += "  <on_crash>destroy</on_crash>\n";
  x += "  <devices>\n";
  // cache='unsafe': the overlay dies with the guest, so flushes buy nothing.
  x += "    <disk type='file' device='disk'>\n";
  x += "      <driver name='qemu' type='qcow2' cache='unsafe' discard='unmap'/>\n";
  x += "      <source file='" + xml_escape(spec.disk.string()) + "'/>\n";
  x += "      <target dev='vda' bus='virtio'/>\n";
  x += "    </disk>\n";
  x += "    <disk type='file' device='disk'>\n";
  x += "      <driver name='qemu' type='raw'/>\n";
  x += "      <source file='" + xml_escape(spec.seed.string()) + "'/>\n";
  x += "      <target dev='vdb' bus='virtio'/>\n";
  x += "      <readonly/>\n";
  x += "    </disk>\n";
  x += "    <serial type='file'>\n";
  x += "      <source path='" + xml_escape(spec.console.string()) + "'/>\n";
  x += "      <target port='0'/>\n";
  x += "    </serial>\n";
  x += "    <channel type='unix'>\n";
  x += "      <source mode='bind'/>\n";
  x += "      <target type='virtio' name='org.qemu.guest_agent.0'/>\n";
  x += "    </channel>\n";
  x += "    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>\n";
  // A template guest (and so every clone restored from it) hands the pages it frees back to
  // QEMU, which drops them: they are zero in the saved state, and a clone's memory shrinks
  // as it frees. Booted hosts keep the device-free machine of the cold path.
  x += spec.is_template ? "    <memballoon model='virtio' freePageReporting='on'/>\n"
                        : "    <memballoon model='none'/>\n";
  if (!spec.proxy_tap.empty()) {
    // managed='no' would make libvirt expect an existing tap; libvirt creates this one, and it
    // goes away with QEMU wherever the control plane has moved it.
    x += "    <interface type='ethernet'>\n";
    x += "      <mac address='" + std::string(k_proxy_mac) + "'/>\n";
    x += "      <target dev='" + xml_escape(spec.proxy_tap) + "'/>\n";
    x += "      <model type='virtio'/>\n";
    x += "      <address type='pci' domain='0x0000' bus='0x00' slot='" +
         pci_slot(k_proxy_pci_slot) + "' function='0x0'/>\n";
    x += "    </interface>\n";
  }
  x += "  </devices>\n";
  // The user-mode NIC sits at a fixed slot near the end of pci.0, away from the slots libvirt
  // assigns, and before the proxy NIC's.
  std::string netdev = "user,id=lbnet0,ipv6=off,hostfwd=tcp:" + spec.ssh_host + ":" +
                       std::to_string(spec.ssh_port) + "-:22";
  if (spec.restrict_network) {
    netdev += ",restrict=on";
  }
  x += "  <qemu:commandline>\n";
  x += "    <qemu:arg value='-netdev'/>\n";
  x += "    <qemu:arg value='" + xml_escape(netdev) + "'/>\n";
  x += "    <qemu:arg value='-device'/>\n";
  x += "    <qemu:arg value='virtio-net-pci,netdev=lbnet0,mac=" + std::string(k_slirp_mac) +
       ",bus=pci.0,addr=" + pci_slot(k_slirp_pci_slot) + "'/>\n";
  x += "  </qemu:commandline>\n";
  x += "</domain>\n";
  return x;
}

std::string owned_host_id(std::string_view domain_xml, std::string_view owner) {
  // libvirt re-serialises metadata with its own prefix choice; match on the namespace URI
  // and then on local element names whatever their prefix.
  const auto ns = domain_xml.find(k_metadata_ns);
  if (ns == std::string_view::npos) {
    return {};
  }
  return metadata_host_id(domain_xml.substr(ns), owner);
}

std::string metadata_template_id(std::string_view scope, std::string_view owner) {
  const auto id_open = scope.find("template-id>");
  const auto owner_open = scope.find("owner>");
  if (id_open == std::string_view::npos || owner_open == std::string_view::npos) {
    return {};
  }
  const auto id = between(scope.substr(id_open), "template-id>", "</");
  const auto tag = between(scope.substr(owner_open), "owner>", "</");
  if (tag != xml_escape(owner)) {
    return {};
  }
  return std::string(id);
}

std::string metadata_host_id(std::string_view scope, std::string_view owner) {
  const auto host_open = scope.find("host-id>");
  const auto owner_open = scope.find("owner>");
  if (host_open == std::string_view::npos || owner_open == std::string_view::npos) {
    return {};
  }
  const auto id = between(scope.substr(host_open), "host-id>", "</");
  const auto tag = between(scope.substr(owner_open), "owner>", "</");
  if (tag != xml_escape(owner)) {
    return {};
  }
  return std::string(id);
}

}  // namespace litterbox::hypervisor
