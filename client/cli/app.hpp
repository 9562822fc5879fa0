#pragma once

#include <string>

namespace CLI {
class App;
}

namespace litterbox::client::cli {

/// Runs the `litterbox` command line and returns the process exit code (see exit_code).
int run(int argc, char** argv);

/// A bash completion script for the commands and options of `app`.
std::string bash_completion(const CLI::App& app);

}  // namespace litterbox::client::cli
