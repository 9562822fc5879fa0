#pragma once

#include <string>
#include <vector>

namespace litterbox::cloudinit {

/// What a finished child process left behind.
struct run_outcome {
  int exit_code = -1;  ///< -1 if it could not be started or was killed by a signal
  std::string output;  ///< stdout and stderr, capped at 64 KiB
};

/// Runs argv[0] (looked up in PATH) with `argv`, no shell, stdin from /dev/null, and waits
/// for it. Blocks; thread-safe.
run_outcome run_argv(const std::vector<std::string>& argv);

}  // namespace litterbox::cloudinit
