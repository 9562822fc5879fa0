#pragma once

#include "base/result.hpp"

#include <chrono>
#include <string>
#include <vector>

namespace litterbox::hypervisor::image {

/// What a finished child process left behind.
struct process_output {
  int exit_code = -1;      ///< exit status, or 128 + signal number when killed
  bool timed_out = false;  ///< killed because it ran past its time box
  std::string out;         ///< captured stdout (capped)
  std::string err;         ///< captured stderr (capped)
};

/// Runs argv[0] (looked up on PATH) with exactly these arguments — never through a shell —
/// captures stdout and stderr (each capped at 1 MiB) and kills it with SIGKILL when it outlives
/// `timeout`. Blocks; thread-safe. Errors: internal when the process cannot be started.
result<process_output> run_process(const std::vector<std::string>& argv,
                                   std::chrono::milliseconds timeout);

}  // namespace litterbox::hypervisor::image
