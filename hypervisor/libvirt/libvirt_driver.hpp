#pragma once

#include "hypervisor/base_images.hpp"
#include "hypervisor/driver.hpp"
#include "hypervisor/guest_listener_sink.hpp"
#include "hypervisor/libvirt/domain_xml.hpp"
#include "hypervisor/libvirt/egress_firewall.hpp"
#include "hypervisor/libvirt/proxy_link.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace litterbox::hypervisor {

class ssh_connection;

/// Where the time of one successful restore_clone or apply_login went, in milliseconds of the
/// calling thread (a phase the call does not have is 0).
struct clone_timing {
  bool is_restore = true;  ///< false: apply_login
  std::string host_id;
  long long prepare_ms = 0;   ///< restore: overlay, console, save head; login: the lookup
  long long restore_ms = 0;   ///< restore: virDomainRestoreFlags until the domain runs
  long long agent_ms = 0;     ///< restore: until the guest agent answers
  long long host_key_ms = 0;  ///< restore: the RNG seed and the host key
  long long clock_ms = 0;     ///< restore: the clock
  long long files_ms = 0;     ///< the rest of the identity (restore) or the login (apply_login)
  long long ssh_ms = 0;       ///< the readiness handshake after the last write
  long long total_ms = 0;
  int agent_commands = 0;  ///< guest-agent commands sent (each is two round trips)
};

/// How a clone's clock is set to the host's after its restore (LITTERBOX_CLONE_CLOCK).
enum class clone_clock {
  /// The system clock only, by one guest-exec of a fixed `/bin/date -u -s @<host time>`; an
  /// agent that refuses guest-exec gets set_time instead.
  date,
  /// guest-set-time: the system clock, then the RTC with `hwclock -w` (which spins the guest CPU
  /// up to a few seconds under TCG).
  set_time,
};

/// Settings of the libvirt driver; litterboxd fills it from its config.
struct libvirt_config {
  std::string uri = "qemu:///system";  ///< LIBVIRT_URI
  std::string accel = "auto";          ///< LITTERBOX_ACCEL: auto | kvm | tcg
  std::filesystem::path state_dir;     ///< per-host files live in <state_dir>/vms/<host id>/
  std::filesystem::path kernel;        ///< LITTERBOX_KERNEL
  std::filesystem::path initrd;        ///< LITTERBOX_INITRD
  std::string cmdline = default_cmdline();
  std::string owner = "litterbox";         ///< owner tag in domain metadata
  std::string qemu_user = "libvirt-qemu";  ///< QEMU's user when qemu.conf names none
  std::filesystem::path qemu_conf = "/etc/libvirt/qemu.conf";  ///< its `user` wins when set
  bool guest_internet = true;  ///< false: QEMU `restrict=on` and a firewall that passes nothing
  bool isolate_host = true;    ///< keep the guest egress firewall in force (see egress_firewall)
  std::vector<egress_entry> guest_egress;  ///< LITTERBOX_GUEST_EGRESS, checked before defaults
  /// How often the egress firewall and the proxy namespace are checked and re-asserted.
  std::chrono::milliseconds firewall_interval{30000};
  std::chrono::milliseconds poll_interval{250};   ///< console/domain polling while booting
  std::chrono::milliseconds check_timeout{3000};  ///< per /doctor check
  /// How long a call waits for a connection to libvirtd to open. libvirt's open has no
  /// timeout of its own: one open runs at a time, on a thread that is abandoned (and cleans
  /// up after itself) if libvirtd never answers.
  std::chrono::milliseconds connect_timeout{10'000};
  /// libvirt keepalive on every connection: a libvirtd that stops answering is declared dead
  /// (and calls in progress fail) after about interval × (count + 1).
  std::chrono::seconds keepalive_interval{5};
  unsigned int keepalive_count = 3;
  /// How long a template guest's agent may take to answer once the guest is ready before the
  /// image counts as not clonable (it has no agent, or the agent is not on its channel).
  std::chrono::milliseconds agent_connect_timeout{30000};
  clone_clock clock = clone_clock::date;  ///< LITTERBOX_CLONE_CLOCK
  /// Called (on the calling thread) after each successful restore_clone and apply_login with
  /// where its time went; the same numbers are logged at debug level. For benchmarks.
  std::function<void(const clone_timing&)> on_timing;
  /// Where each host's guest proxy listener goes (issue 11); nullptr: the hosts get their
  /// proxy link (same devices, same isolation) but nobody listens on it.
  guest_listener_sink* guest_listeners = nullptr;
  /// The SSH forward ports (LITTERBOX_SSH_PORTS), for the ssh_ports /doctor check; an empty
  /// range (min > max) skips it.
  int ssh_port_min = 1;
  int ssh_port_max = 0;
  /// The network namespace the guests' proxy taps are moved into.
  std::string proxy_netns = "litterbox-gp";
  /// The proxy links; nullptr: netns_proxy_links over proxy_netns and guest_listeners.
  std::shared_ptr<proxy_links> links;
  /// Guests start (and clones are restored) paused and run only once their proxy link is
  /// adopted. false only for libvirt's test:///default, which cannot start a domain paused
  /// (and runs no guest anyway).
  bool start_paused = true;
};

/// hypervisor::driver over the libvirt C API: qcow2 overlay + NoCloud seed + direct kernel
/// boot, user-mode networking with a loopback SSH forward, readiness from the guest's ready
/// line on the serial console plus a pinned-key SSH handshake. Thread-safe.
///
/// Every guest also has a proxy NIC on a tap of its own (docs/design/guest-proxy.md): a
/// guest starts (or is restored) paused, its tap is moved into the proxy namespace and its
/// listener handed to config.guest_listeners, and only then does it run; a guest whose link
/// cannot be set up is destroyed. destroy() takes the listener away before the domain. At
/// start the driver re-adopts the taps of the running domains it owns and deletes taps that
/// no running domain uses.
class libvirt_driver final : public driver {
 public:
  /// Connects to libvirt and, if configured, installs the guest egress firewall for the uid
  /// QEMU runs as, then re-asserts it every firewall_interval and before each create_vm. The
  /// proxy namespace is prepared here and, when inspect() finds it changed, re-prepared on
  /// the same interval.
  /// Throws std::runtime_error when the configuration is unusable (unknown accel, no state
  /// dir, QEMU running as root, the firewall cannot be installed); an unreachable libvirt is
  /// not fatal here (reconnects on use, reported by doctor).
  libvirt_driver(libvirt_config config, base_images& images);
  ~libvirt_driver() override;
  libvirt_driver(const libvirt_driver&) = delete;
  libvirt_driver& operator=(const libvirt_driver&) = delete;

  std::string_view provider() const override { return "libvirt"; }
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
  std::optional<std::uint64_t> known_image_bytes(std::string_view image) override {
    return images_.known_size(image);
  }
  result<void> build_template(const template_spec& spec,
                              std::chrono::steady_clock::time_point deadline) override;
  result<void> restore_clone(std::string_view template_id, const vm_spec& spec,
                             std::chrono::steady_clock::time_point deadline) override;
  result<void> apply_login(const vm_spec& spec,
                           std::chrono::steady_clock::time_point deadline) override;
  result<void> destroy_template(std::string_view template_id) override;
  result<std::vector<std::string>> list_templates() override;
  /// Also drops the guest proxy listeners of hosts whose guest is gone (destroyed by another
  /// process, or dead): their taps went with their QEMUs.
  result<std::map<std::string, vm_status>> vm_states() override;
  void watch_vms(std::function<void()> wake) override;

  /// The accelerator guests run under.
  accel acceleration() const { return accel_; }
  /// Directory holding the per-host files of `host_id`.
  std::filesystem::path host_dir(std::string_view host_id) const;
  /// Directory holding the files of template `template_id` (disk, state file, info).
  std::filesystem::path template_dir(std::string_view template_id) const;

 private:
  struct connection;
  /// The live connection, opened if needed; waits at most config_.connect_timeout and never
  /// holds mutex_ while libvirtd is being waited for. nullptr when libvirt is unreachable,
  /// with the reason in `*why` when given.
  std::shared_ptr<connection> connect(std::string* why = nullptr);
  result<void> assert_firewall(std::optional<unsigned> observed_uid);
  check_result isolation_check();
  std::vector<std::string> owned_domain_names();
  /// Ids that `id_of` reads from our metadata on any domain, and every id-named entry of
  /// `dir`: what list_owned and list_templates report. Errors: unavailable.
  /// Stops and undefines every domain whose metadata `id_of` reads as `id`, then removes
  /// `dir`; `what` names them in errors. Idempotent. Errors: unavailable, teardown_failed.
  result<void> remove_tagged(std::string (*id_of)(std::string_view metadata_xml,
                                                  std::string_view owner),
                             std::string_view id, std::string_view what,
                             const std::filesystem::path& dir);
  result<std::vector<std::string>> owned_ids(std::string (*id_of)(std::string_view metadata_xml,
                                                                  std::string_view owner),
                                             const std::filesystem::path& dir);
  /// Every firewall_interval: the egress firewall (when isolating) and the proxy namespace.
  void firewall_loop();
  struct open_attempt;
  class event_loop;
  /// The watch_vms callback, shared with the lifecycle subscriptions of every connection (a
  /// callback libvirt still holds must not outlive what it calls).
  struct vm_watch;
  /// Subscribes `c` to domain lifecycle events (once per connection).
  void subscribe(connection& c);
  /// Keeps the driver's destructor waiting until the returned token is dropped: for /doctor
  /// checks that use the driver from a thread that may outlive their time box.
  std::shared_ptr<void> hold_for_check();
  /// Disk overlay, seed and console of a guest booted from `spec`, in `dir`; returns its
  /// domain XML (tagged as a template guest if `is_template`).
  result<std::string> make_guest(const vm_spec& spec, const std::filesystem::path& dir,
                                 bool is_template);
  result<void> await_ready(const vm_spec& spec, const std::filesystem::path& console_path,
                           std::chrono::steady_clock::time_point deadline);
  /// Probes spec's SSH forward until it presents spec.host_key (or the domain dies). The
  /// first handshake runs on `early` when given and open (a connection opened before the
  /// last guest-agent writes, so that sshd's start-up for it overlapped them).
  result<void> await_host_key(const vm_spec& spec, std::chrono::steady_clock::time_point deadline,
                              ssh_connection* early = nullptr);

  /// Re-adopts the taps of our running domains, deletes the proxy namespace's other taps.
  void restore_links();

  libvirt_config config_;
  base_images& images_;
  std::shared_ptr<proxy_links> links_;
  accel accel_;
  std::shared_ptr<event_loop> events_;  ///< runs libvirt's event loop (keepalive) while we live
  std::shared_ptr<vm_watch> watch_;
  std::mutex mutex_;
  std::shared_ptr<connection> conn_;
  std::shared_ptr<open_attempt> opening_;  ///< the one open in progress, if any
  std::mutex building_mutex_;
  std::set<std::string> building_;  ///< template ids whose build_template is running
  std::optional<unsigned int> qemu_uid_;
  std::optional<unsigned int> qemu_gid_;
  std::string qemu_user_;  // the user QEMU runs as: qemu.conf's, else config_.qemu_user

  std::unique_ptr<egress_firewall> firewall_;
  std::mutex firewall_mutex_;
  std::vector<unsigned> firewall_uids_;  // guarded by firewall_mutex_; empty until applied
  std::mutex stop_mutex_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread firewall_thread_;
  std::mutex checks_mutex_;
  std::condition_variable checks_cv_;
  int checks_running_ = 0;  // guarded by checks_mutex_
};

}  // namespace litterbox::hypervisor
