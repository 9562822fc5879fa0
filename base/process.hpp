#pragma once

#include "base/result.hpp"

#include <chrono>
#include <string>
#include <vector>

namespace litterbox {

/// What a finished child process left behind.
struct process_output {
  int exit_code = -1;      ///< exit status, or 128 + signal number when killed
  bool timed_out = false;  ///< killed (with its whole process group) at its deadline
  std::string out;         ///< captured stdout (capped at 1 MiB)
  std::string err;         ///< captured stderr (capped at 1 MiB)
};

/// How a child runs besides its argv.
struct process_options {
  /// The child and everything it started are killed (SIGKILL to its process group) when they
  /// outlive this; the call then returns with timed_out set. Every external call has one.
  std::chrono::milliseconds timeout;
  /// Names of variables of this process's environment handed on to the child (when set), on
  /// top of the minimal environment of child_environment(). Name only what the tool needs:
  /// the daemon's environment holds secrets (DATABASE_URL, SERVICE_TOKENS).
  std::vector<std::string> pass_env;
};

/// The environment a child gets: PATH, HOME and TMPDIR of this process (PATH and HOME with a
/// default when unset), LANG=C.UTF-8 and LC_ALL=C.UTF-8, and the variables of `pass_env` that
/// are set here. Nothing else of this process's environment reaches a child. Thread-safe.
std::vector<std::string> child_environment(const std::vector<std::string>& pass_env);

/// Runs argv[0] (looked up on PATH) with exactly these arguments — never through a shell — in
/// a process group of its own, stdin from /dev/null, no descriptor of this process but the
/// output pipes, the environment of child_environment(); captures stdout and stderr and waits
/// for it to exit and close both, at most `options.timeout`. Blocks; thread-safe. Errors:
/// the errno (generic category) of a failed pipe/spawn/wait; a tool that ran and failed or
/// timed out is a value (exit_code, timed_out).
result<process_output> run_process(const std::vector<std::string>& argv,
                                   const process_options& options);

/// run_process with only a deadline.
result<process_output> run_process(const std::vector<std::string>& argv,
                                   std::chrono::milliseconds timeout);

/// What a failed run says, for an error message: its stderr (first 300 bytes), "timed out",
/// or why it could not be started.
std::string process_failure_text(const result<process_output>& r);

}  // namespace litterbox
