#pragma once

#include "base/result.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

struct _virDomain;

namespace litterbox::hypervisor {

/// The JSON of one guest-agent request: {"execute": <execute>, "arguments": <arguments>}
/// (`arguments_json` is a JSON object, or empty for none).
std::string agent_request(std::string_view execute, std::string_view arguments_json = {});

/// The "return" member of an agent reply, as JSON text. Errors: boot_failed (no reply
/// object or an "error" member).
result<std::string> agent_return(std::string_view reply);

/// The guest-exec arguments (a JSON object) that set a guest's system clock, and not its RTC,
/// to `now`: the fixed argv `/bin/date -u -s @<seconds>.<nanoseconds>`, the digits formatted
/// here from `now` and nothing else taken from anywhere. Errors: boot_failed (`now` outside
/// 2000–2099, which no host clock should be; the guest is then left alone).
result<std::string> clock_exec_arguments(std::chrono::system_clock::time_point now);

/// True if a failed agent call's message says the guest refused the command itself (blocked
/// by the agent's configuration, unknown to it, or unsupported there, e.g. guest-set-time
/// without hwclock) rather than failed to answer.
bool agent_refused(std::string_view message);

/// The QEMU guest agent of one running domain, over its virtio-serial channel through
/// libvirt (virDomainQemuAgentCommand; libvirt syncs the channel before commands). Every call
/// gives up at the deadline given at construction. Not thread-safe; the domain handle is not
/// owned and must outlive this object.
class guest_agent {
 public:
  guest_agent(_virDomain* domain, std::chrono::steady_clock::time_point deadline);

  /// Retries guest-ping until the agent answers or `until` (capped at the deadline): right
  /// after a boot or restore the channel may not be open yet. Errors: boot_failed.
  result<void> wait_connected(std::chrono::steady_clock::time_point until);

  /// Sets the guest's clock (and its RTC, the agent runs hwclock) to the host's now.
  /// Errors: clone_unsupported (refused: no hwclock), boot_failed.
  result<void> set_time_now();

  /// Sets the guest's system clock (not its RTC) to the host's now with one guest-exec of
  /// clock_exec_arguments, and waits for that command to exit 0 (guest-exec-status). Much
  /// faster than set_time_now, whose `hwclock -w` spins the guest CPU for up to a few seconds
  /// under emulation. The guest's clock is behind the host's by at most this call's duration.
  /// Errors: clone_unsupported (the agent refuses guest-exec or guest-exec-status),
  /// boot_failed (the command failed, or did not exit before the deadline).
  result<void> set_system_clock_now();

  /// Truncates or creates `path` (a new file is root's, mode 0600) and writes `content`.
  /// Errors: clone_unsupported (refused), boot_failed.
  result<void> write_file(std::string_view path, std::string_view content);

  /// Discards unused blocks of the guest's filesystems. Errors: clone_unsupported, boot_failed.
  result<void> fstrim();

  /// One command; returns the reply's "return" member as JSON text. Errors:
  /// clone_unsupported (refused), boot_failed (no answer in time, agent error).
  result<std::string> command(std::string_view execute, std::string_view arguments_json = {});

  /// Number of commands sent so far (each is two round trips: libvirt syncs first).
  int commands() const { return commands_; }

 private:
  _virDomain* domain_;
  std::chrono::steady_clock::time_point deadline_;
  int commands_ = 0;
};

}  // namespace litterbox::hypervisor
