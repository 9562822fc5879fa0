#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace litterbox::hypervisor {

/// Whether QEMU could bind its SSH forward (user networking's hostfwd) on host:port now.
/// Binds and closes a socket with SO_REUSEADDR, as libslirp's listener does, so a
/// connection of an earlier guest in TIME_WAIT does not count as taken while a listener or
/// any live socket on that port (an outgoing connection's ephemeral port among them) does.
/// A port found free may still be taken before QEMU binds it: is_forward_bind_failure
/// recognises that case after the fact. False only when the port is in use (EADDRINUSE):
/// any other trouble (a host that is not a local IPv4 address) is left to QEMU to report.
bool forward_port_bindable(const std::string& host, int port);

/// Whether a libvirt error from starting or restoring a guest says that QEMU could not set
/// up its SSH forward (its port was taken), as opposed to any other start failure.
bool is_forward_bind_failure(std::string_view libvirt_error);

/// How many ports of [lo, hi] the kernel may give an outgoing connection as its source port,
/// so that an SSH forward on them can find them taken: those inside `local_port_range`
/// (net.ipv4.ip_local_port_range, "32768\t60999") and not in `reserved_ports`
/// (net.ipv4.ip_local_reserved_ports, "22000-22999,30000" or empty). nullopt when either
/// text is malformed.
std::optional<int> ephemeral_ports_within(int lo, int hi, std::string_view local_port_range,
                                          std::string_view reserved_ports);

/// ephemeral_ports_within for this machine's sysctls (read from /proc/sys/net/ipv4); nullopt
/// when they cannot be read.
std::optional<int> ephemeral_ports_within(int lo, int hi);

}  // namespace litterbox::hypervisor
