#pragma once

#include "hypervisor/guest_listener_sink.hpp"

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace litterbox::e2e {

/// The guest kernel and initrd on this machine (/boot/vmlinuz-*, /boot/initrd.img-*), or
/// LITTERBOX_KERNEL / LITTERBOX_INITRD when set.
std::filesystem::path guest_kernel();
std::filesystem::path guest_initrd();

/// A qcow2 base disk with systemd, sshd and cloud-init: LITTERBOX_E2E_BASE_DISK when set,
/// else the one make-base-disk.sh builds (once per recipe, under /var/tmp/litterbox-e2e).
/// Throws std::runtime_error when it cannot be built.
std::filesystem::path base_disk();

/// A loopback TCP port nobody listens on right now (bound to port 0 and released).
int free_loopback_port();

/// Runs argv with no shell (base/process.hpp, killed after `timeout`), returns exit code and
/// combined output; a run past `timeout` has a non-zero exit code and says so in the output.
struct command_result {
  int exit_code = -1;
  std::string output;
};
command_result run(const std::vector<std::string>& argv,
                   std::chrono::seconds timeout = std::chrono::seconds(600));

/// Writes `data` to `path` with mode 0600.
void write_private_file(const std::filesystem::path& path, const std::string& data);

/// The test's own end of the guest proxy listeners: serves each listener on a thread of its
/// own, answering every connection with "HTTP/1.0 200 OK" and the host id of the listener it
/// arrived on as the body, and counts connections per host id.
class proxy_sink final : public hypervisor::guest_listener_sink {
 public:
  proxy_sink();
  ~proxy_sink() override;
  proxy_sink(const proxy_sink&) = delete;
  proxy_sink& operator=(const proxy_sink&) = delete;

  void add_listener(const std::string& host_id, int fd) override;
  void remove_listener(std::string_view host_id) override;

  /// Connections served for `host_id` so far.
  int connections(const std::string& host_id);
  /// Whether `host_id` has a listener now.
  bool listening(const std::string& host_id);
  /// Host ids whose listener was removed, in order.
  std::vector<std::string> removed();

 private:
  struct served;
  std::mutex mutex_;
  std::map<std::string, std::unique_ptr<served>> listeners_;
  std::map<std::string, int> connections_;
  std::vector<std::string> removed_;
};

/// Python run inside a guest (over SSH): resolves proxy.litterbox.internal, makes one HTTP
/// request to it on port 80 and prints the body, then tries port 81 on the same address;
/// prints "<address>\n<body>\n81 closed\n" when all is as it must be.
std::string proxy_probe_command();

}  // namespace litterbox::e2e
