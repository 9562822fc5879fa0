#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <sys/types.h>
#include <utility>
#include <vector>

namespace litterbox::test {

/// How to start `litterboxd serve` for a black-box test.
struct litterboxd_options {
  /// The executable to run.
  std::filesystem::path binary;
  std::string database_url;
  std::vector<std::string> service_tokens;
  /// The `--hypervisor` backend: `fake` for contract tests, `libvirt` for real guests.
  std::string hypervisor = "fake";
  /// Flags appended after `serve --hypervisor=<hypervisor> --listen 127.0.0.1:0 --port-file
  /// <path>`.
  std::vector<std::string> args;
  /// Extra environment (the child gets only PATH, DATABASE_URL, SERVICE_TOKENS,
  /// LITTERBOX_CONFIG=/dev/null, these, LITTERBOX_TEMPLATES=off unless these set it, and
  /// LITTERBOX_FAKE_STATE_DIR=fake_node_dir(database_url) for a fake hypervisor unless these
  /// or `args` name a state dir).
  std::vector<std::pair<std::string, std::string>> env;
  /// How long to wait for the port file before giving up.
  std::chrono::milliseconds start_timeout = std::chrono::seconds(30);
};

/// Where the fake hypervisor of a `litterboxd serve` on `database_url` keeps its VMs when the
/// test names no state dir: one node per test database, shared by every replica on it and by
/// a server restarted on it, and by no other database's servers (whose orphan sweeps would
/// remove its VMs). test_database removes it with the database.
std::filesystem::path fake_node_dir(const std::string& database_url);

/// A running `litterboxd serve` child process bound to 127.0.0.1 on a port it chose. Its
/// stdout and stderr go to a file kept for diagnostics. The destructor stops it (SIGTERM,
/// then SIGKILL if it does not exit in time). The child dies with the test process
/// (PR_SET_PDEATHSIG). Not thread-safe; create and stop it from one thread.
class litterboxd_process {
 public:
  /// Starts the server and waits (bounded) until it has written its port file. Throws
  /// std::runtime_error with the captured output when it exits or times out first.
  explicit litterboxd_process(litterboxd_options options);
  ~litterboxd_process();
  litterboxd_process(const litterboxd_process&) = delete;
  litterboxd_process& operator=(const litterboxd_process&) = delete;

  std::uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }

  /// True while the child has not exited.
  bool running();
  /// SIGTERM, then waits up to `grace` for the exit; SIGKILL after that. Returns the wait
  /// status of the child (as from waitpid), or nullopt if it had already been reaped.
  std::optional<int> stop(std::chrono::milliseconds grace = std::chrono::seconds(10));
  /// SIGKILL at once (crash tests); returns the wait status.
  std::optional<int> kill();
  /// "running", or how the child ended ("exited with code 1", "killed by signal Aborted").
  std::string state();
  /// Everything the child wrote to stdout/stderr so far.
  std::string output() const;
  /// The last `max_bytes` of output(), for failure messages.
  std::string output_tail(std::size_t max_bytes = 8192) const;
  /// The directory holding the port file and the output log (removed by the destructor).
  const std::filesystem::path& work_dir() const { return dir_; }

 private:
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);

  std::filesystem::path dir_;
  std::filesystem::path log_path_;
  pid_t pid_ = -1;
  std::optional<int> exit_status_;
  std::uint16_t port_ = 0;
};

}  // namespace litterbox::test
