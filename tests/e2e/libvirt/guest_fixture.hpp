#pragma once

#include <chrono>
#include <filesystem>
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

}  // namespace litterbox::e2e
