#pragma once

#include "base/result.hpp"

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace litterbox::client {

/// Where and how to reach the service.
struct client_config {
  std::string url;    ///< base URL, e.g. http://127.0.0.1:8080 (no trailing slash)
  std::string token;  ///< bearer token; never logged or put into error messages
  /// Budget of one create (blocking POST /hosts, or create + wait in async mode).
  std::chrono::milliseconds create_timeout{std::chrono::seconds(300)};
  /// Budget of every other call, retries included.
  std::chrono::milliseconds request_timeout{std::chrono::seconds(30)};
};

/// Parses the env file `scripts/up` writes: `export NAME=value` lines (the `export` is
/// optional), `#` comments and blank lines; values may be single- or double-quoted as in a
/// POSIX shell. Lines that are not assignments are skipped.
std::map<std::string, std::string> parse_env_file(std::string_view text);

/// Parses a number of seconds ("300", "2.5"); nullopt unless positive and finite.
std::optional<std::chrono::milliseconds> parse_timeout_seconds(std::string_view text);

/// Looks a variable up; returns nullopt when unset. Injected so tests control the environment.
using env_lookup = std::function<std::optional<std::string>(const std::string&)>;
/// Reads a whole file; nullopt when it cannot be read.
using file_reader = std::function<std::optional<std::string>(const std::string&)>;

/// The process environment and the file system.
env_lookup process_env();
file_reader read_whole_file();

/// The env file's path: "$LITTERBOX_STATE_DIR/env", default /var/lib/litterbox/env.
std::string env_file_path(const env_lookup& env);

/// Builds the configuration: SANDBOX_SERVICE_URL, SANDBOX_SERVICE_TOKEN and
/// SANDBOX_SERVICE_TIMEOUT (seconds; sets the create timeout, other calls use at most 30 s)
/// from the environment, each falling back to the env file. Errors: invalid_argument when no
/// URL is configured, the URL is not http(s), or the timeout is not a positive number.
result<client_config> load_config(const env_lookup& env, const file_reader& read_file);

}  // namespace litterbox::client
