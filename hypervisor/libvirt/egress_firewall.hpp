#pragma once

#include "base/process.hpp"
#include "base/result.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace litterbox::hypervisor {

/// The chain holding the guest egress rules, in the filter table of iptables and ip6tables.
inline constexpr std::string_view k_egress_chain = "LITTERBOX-GUEST-EGRESS";
/// Where the egress chain sends what it denies: a TCP reset, so that a connection fails at
/// once in both families, and an ICMP port-unreachable for everything else.
inline constexpr std::string_view k_reject_chain = "LITTERBOX-GUEST-REJECT";

enum class ip_family { v4, v6 };

/// An address block such as 10.1.2.0/24 or fd00::/8; host bits are always zero.
struct cidr {
  ip_family family = ip_family::v4;
  std::array<std::uint8_t, 16> bytes{};  ///< the network address (4 bytes used for v4)
  int prefix = 0;
  /// "10.1.2.0/24", "fd00::/8": the form iptables prints.
  std::string text() const;
  bool operator==(const cidr&) const = default;
};

/// Parses "a.b.c.d/n" or "x:y::/n"; a bare address is a /32 or /128. Host bits set below the
/// prefix are an error (they usually mean a typo). Errors: hypervisor::errc::internal with
/// the reason, for configuration messages.
result<cidr> parse_cidr(std::string_view text);

/// One operator entry of LITTERBOX_GUEST_EGRESS.
struct egress_entry {
  bool allow = false;
  cidr block;
  bool operator==(const egress_entry&) const = default;
};

/// Parses LITTERBOX_GUEST_EGRESS: comma-separated `allow=CIDR` / `deny=CIDR` entries, first
/// match wins, spaces around entries ignored, empty text means no entries. Errors (with the
/// offending entry named): hypervisor::errc::internal.
result<std::vector<egress_entry>> parse_egress_policy(std::string_view text);

/// What guests may reach, beyond the established connections they already have.
struct egress_policy {
  bool internet = true;               ///< false: guests open no connection at all
  std::vector<egress_entry> entries;  ///< operator entries, checked in order before defaults
  std::vector<cidr> resolvers;        ///< the host's DNS servers: port 53 stays open to them
};

/// Blocks denied by default for `family`: loopback, link-local, private, CGNAT, multicast,
/// broadcast, "this network" and the other special-purpose ranges (RFC 6890).
std::vector<cidr> default_denied(ip_family family);

/// The nameserver addresses of a resolv.conf text, as /32 or /128 blocks (zone ids dropped).
std::vector<cidr> parse_resolv_conf(std::string_view text);

/// The rules of the egress chain for `family`, in order, each as an `-A CHAIN …` line.
std::vector<std::string> render_chain(const egress_policy& policy, ip_family family);

/// The rules of the reject chain, each as an `-A CHAIN …` line.
std::vector<std::string> render_reject_chain();

/// The OUTPUT rule sending `uid`'s packets through the chain, as an `-A OUTPUT …` line.
std::string render_jump(unsigned uid);

/// Input for `iptables-restore --noflush`: declares (and so empties) both chains, fills them,
/// deletes `stale_output_rules` (`-A OUTPUT …` lines as `iptables -S` prints them) and
/// inserts a jump for each of `uids`, in that order, as the first rules of OUTPUT, in one
/// transaction.
std::string render_restore(const egress_policy& policy, ip_family family,
                           const std::vector<unsigned>& uids,
                           const std::vector<std::string>& stale_output_rules);

/// OUTPUT rules of ours in an `iptables -S OUTPUT` listing: jumps to the chain (for any uid)
/// and the single REJECT rule of earlier versions (comment litterbox-guest-isolation).
std::vector<std::string> our_output_rules(std::string_view listing);

/// Why an `iptables -S OUTPUT` listing does not send each of `uids` through the chain before
/// any other rule; nullopt when its first rules are exactly those jumps (in any order).
std::optional<std::string> jump_problem(std::string_view listing,
                                        const std::vector<unsigned>& uids);

/// The `user` of a libvirt qemu.conf text (quotes removed), nullopt when it sets none.
std::optional<std::string> qemu_conf_user(std::string_view text);

/// The real uid in a /proc/<pid>/status text.
std::optional<unsigned> status_uid(std::string_view text);

/// The libvirt domain name of a QEMU command line (NUL-separated /proc/<pid>/cmdline):
/// the `guest=` value of `-name`, or the plain `-name` value; nullopt when there is none.
std::optional<std::string> qemu_cmdline_domain(std::string_view cmdline);

/// A QEMU process running a libvirt domain.
struct qemu_process {
  int pid = 0;
  unsigned uid = 0;
  std::string domain;
};

/// Every QEMU process on this host whose command line names a domain, from /proc.
std::vector<qemu_process> running_qemu_processes();

/// The outcome of trying, as `uid`, to open a connection to a listener on this host.
enum class probe_outcome {
  refused,      ///< the connection was refused or timed out: the rules hold
  connected,    ///< it went through: nothing stops `uid` from reaching this host
  unavailable,  ///< the probe could not run (not root, no such family, no listener)
};

/// Forks a child that drops to `uid`/`gid` and connects to a fresh listener on 127.0.0.1
/// (or ::1). Blocks for at most `timeout`; thread-safe; needs root.
probe_outcome probe_local_connect(ip_family family, unsigned uid, unsigned gid,
                                  std::chrono::milliseconds timeout);

/// Whether the rules are in force, and if not, why.
struct firewall_state {
  bool ok = false;
  std::string detail;
};

/// Keeps the guest egress rules in force for the uids QEMU runs as (one, unless qemu.conf
/// changed under running guests): one chain per address family, jumped to from the top of
/// OUTPUT for each of those uids.
class egress_firewall {
 public:
  virtual ~egress_firewall() = default;
  /// Rebuilds the chains and puts a jump for each of `uids` first in OUTPUT (removing jumps
  /// for any other uid), one atomic iptables-restore per family: the rules are never absent,
  /// even while being rebuilt. Blocks; thread-safe. Errors: unavailable (a tool failed).
  virtual result<void> apply(const std::vector<unsigned>& uids) = 0;
  /// Whether, in both families, the first rules of OUTPUT send `uids` through the chain and
  /// both chains hold as many rules as apply() would write now. Blocks; thread-safe.
  virtual firewall_state inspect(const std::vector<unsigned>& uids) = 0;
};

/// Runs a tool: litterbox::run_process (when empty), or a script in tests.
using command_runner = std::function<result<process_output>(const std::vector<std::string>& argv,
                                                            std::chrono::milliseconds timeout)>;

/// egress_firewall over iptables/ip6tables (either backend). The policy's resolvers are
/// re-read from `resolv_conf` on each apply, as QEMU's DNS forwarder re-reads them. On a
/// kernel without IPv6 (no /proc/net/if_inet6) only the IPv4 rules are kept.
class iptables_egress_firewall final : public egress_firewall {
 public:
  iptables_egress_firewall(egress_policy policy, std::string resolv_conf = "/etc/resolv.conf",
                           command_runner run = {},
                           std::chrono::milliseconds tool_timeout = std::chrono::seconds(30));
  result<void> apply(const std::vector<unsigned>& uids) override;
  firewall_state inspect(const std::vector<unsigned>& uids) override;
  /// The policy of the last apply (resolvers included).
  egress_policy current_policy() const;

 private:
  egress_policy policy_with_resolvers() const;
  result<std::string> run_tool(const std::vector<std::string>& argv) const;
  result<void> apply_family(const egress_policy& policy, ip_family family,
                            const std::vector<unsigned>& uids);

  std::vector<ip_family> families() const;

  egress_policy policy_;
  std::string resolv_conf_;
  bool ipv6_ = true;
  command_runner run_;
  std::chrono::milliseconds tool_timeout_;
  mutable std::mutex mutex_;
  egress_policy applied_;
};

}  // namespace litterbox::hypervisor
