#pragma once

#include "base/result.hpp"
#include "hypervisor/guest_listener_sink.hpp"

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace litterbox::hypervisor {

/// The host's side of the proxy link (issue 11, docs/design/guest-proxy.md): every guest's
/// proxy NIC is a tap that the driver moves into one network namespace, where nothing lives
/// but the taps and one listener per tap on 169.254.77.1:80, bound to that tap with
/// SO_BINDTODEVICE. The listener is the guest's identity: whatever source address a guest
/// uses, its connections arrive on its own tap's listener. Thread-safe.
class proxy_links {
 public:
  /// What inspect() found: `ok` when the namespace is as prepare() left it; `detail` says
  /// what is wrong, or what is in force.
  struct state {
    bool ok = false;
    std::string detail;
  };

  virtual ~proxy_links() = default;

  /// Creates the namespace if it does not exist and (re)asserts what it must be: IPv6 off,
  /// no forwarding, no route, and a filter that accepts only TCP to 169.254.77.1:80 (ARP is
  /// not IP and passes). Idempotent. Errors: unavailable.
  virtual result<void> prepare() = 0;

  /// Whether the namespace is still what prepare() made it: it exists, forwarding is off,
  /// IPv6 is off, and its whole nftables ruleset is the one prepare() installed (a flush, a
  /// changed rule or an added table are all caught). Read-only.
  virtual state inspect() = 0;

  /// Moves `tap` (in this process's namespace, or already in the proxy namespace after a
  /// restart) into the proxy namespace, gives it 169.254.77.1/30, IPv6 off, and brings it up;
  /// when `listen` and a sink is set, opens its listener and hands it to the sink as host
  /// `host_id`'s, replacing one it has (a template guest, which nobody talks to, is adopted
  /// without one). Errors:
  /// vm_create_failed (no such tap, or a step failed; the tap is left where it is).
  virtual result<void> adopt(const std::string& host_id, const std::string& tap, bool listen) = 0;

  /// Takes host `host_id`'s listener from the sink (closing it and its connections) and
  /// deletes `tap` from the proxy namespace. A tap that is gone already is fine. Errors:
  /// teardown_failed.
  virtual result<void> remove(const std::string& host_id, const std::string& tap) = 0;

  /// The proxy taps (names starting with "lbp") in the proxy namespace. Errors: unavailable.
  virtual result<std::vector<std::string>> taps() = 0;

  /// The hosts whose listener this object handed to the sink, each with the generation of
  /// that adopt (a later adopt of the same host has a higher one).
  virtual std::map<std::string, std::uint64_t> listening() = 0;

  /// Takes host `host_id`'s listener from the sink if it is still the one of adopt
  /// `generation`: its guest is gone (destroyed by another process, or it died) and its tap
  /// went with its QEMU. A newer adopt's listener stays. The tap is not touched.
  virtual void drop_listener(const std::string& host_id, std::uint64_t generation) = 0;
};

/// The real thing: `ip` for the links, `nft` for the filter, and a thread that setns()es into
/// the namespace to create each listening socket. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN).
class netns_proxy_links final : public proxy_links {
 public:
  /// `sink` may be null: taps are adopted and isolated, but no listener is opened.
  explicit netns_proxy_links(std::string netns = "litterbox-gp",
                             guest_listener_sink* sink = nullptr);

  result<void> prepare() override;
  state inspect() override;
  result<void> adopt(const std::string& host_id, const std::string& tap, bool listen) override;
  result<void> remove(const std::string& host_id, const std::string& tap) override;
  result<std::vector<std::string>> taps() override;
  std::map<std::string, std::uint64_t> listening() override;
  void drop_listener(const std::string& host_id, std::uint64_t generation) override;

  /// A listening TCP socket on 169.254.77.1:`port` in the namespace, bound to `tap`
  /// (close-on-exec, blocking; the caller owns it). Errors: vm_create_failed.
  result<int> open_listener(const std::string& tap, int port = 80);

  const std::string& netns() const { return netns_; }

 private:
  std::string netns_;
  guest_listener_sink* sink_;
  std::mutex prepare_mutex_;
  /// `nft list ruleset` in the namespace right after the last prepare(): what inspect()
  /// compares with (nftables prints a ruleset in its own canonical form, not as it was
  /// written, so the listing, not k_ruleset, is the reference). Under prepare_mutex_.
  std::string ruleset_;
  std::mutex listeners_mutex_;  ///< the sink's calls and listening_ change together
  std::map<std::string, std::uint64_t> listening_;
  std::uint64_t generation_ = 0;
};

/// Records what the driver asks of its proxy links, in order ("adopt <host> <tap> listen",
/// "adopt <host> <tap>", "remove <host> <tap>"), and fails the next adopt when told to.
class fake_proxy_links final : public proxy_links {
 public:
  result<void> prepare() override;
  /// Healthy unless break_namespace() was called since the last prepare().
  state inspect() override;
  result<void> adopt(const std::string& host_id, const std::string& tap, bool listen) override;
  result<void> remove(const std::string& host_id, const std::string& tap) override;
  result<std::vector<std::string>> taps() override;
  std::map<std::string, std::uint64_t> listening() override;
  void drop_listener(const std::string& host_id, std::uint64_t generation) override;

  std::vector<std::string> calls();
  /// The next adopt fails with vm_create_failed.
  void fail_next_adopt();
  /// Taps that taps() reports (as if left in the namespace by an earlier run).
  void add_tap(std::string tap);
  /// inspect() fails until the next prepare(), as if someone flushed the filter.
  void break_namespace();
  /// How many times inspect() was called.
  int inspections();

 private:
  std::mutex mutex_;
  std::vector<std::string> calls_;
  std::vector<std::string> taps_;
  std::map<std::string, std::uint64_t> listening_;
  std::uint64_t generation_ = 0;
  bool fail_adopt_ = false;
  bool broken_ = false;
  int inspections_ = 0;
};

}  // namespace litterbox::hypervisor
