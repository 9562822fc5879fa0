#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace litterbox::client::test {

/// What a run of the CLI left behind.
struct cli_result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

/// Runs the `litterbox` binary with `args` (argv only, no shell) and exactly the environment
/// `env` ("NAME=value"), stdin from `stdin_file` (default /dev/null); stdout and stderr are
/// captured through files in `dir`.
cli_result run_cli(const std::filesystem::path& dir, const std::vector<std::string>& env,
                   const std::vector<std::string>& args,
                   const std::filesystem::path& stdin_file = "/dev/null");

/// The whole content of a file ("" when unreadable).
std::string slurp(const std::filesystem::path& p);

}  // namespace litterbox::client::test
