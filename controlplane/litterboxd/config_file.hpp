#pragma once

#include <CLI/CLI.hpp>
#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace litterbox::litterboxd {

/// Where every subcommand looks for its configuration when neither `--config` nor
/// LITTERBOX_CONFIG names a file. A missing default file is not an error.
inline constexpr std::string_view k_default_config_path = "/etc/litterbox/litterboxd.conf";

/// A configuration file that cannot be read or parsed; the message names the file and line.
class config_file_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Parses `KEY=value` lines whose keys are the environment variable names of the flags
/// (README "Configuration"). Blank lines and lines starting with `#` are ignored; spaces
/// around the key and the value are dropped; a value wrapped in one pair of matching single
/// or double quotes loses them (nothing else is interpreted: no expansion, no escapes), so a
/// file written for the shell (`KEY='value'`, also with a leading `export `) reads the same.
/// A key outside `known_keys`, a repeated key or a line without `=` is a config_file_error
/// (a typo must not silently fall back to a default). `origin` names the file in errors.
std::map<std::string, std::string> parse_config_file(std::string_view text,
                                                     const std::set<std::string>& known_keys,
                                                     std::string_view origin);

/// The file to read: the value of `--config PATH` / `--config=PATH` in argv if present,
/// else LITTERBOX_CONFIG from the environment, else k_default_config_path. `explicit_choice`
/// tells whether the caller named it (then a missing file is an error).
struct config_file_choice {
  std::filesystem::path path;
  bool explicit_choice = false;
};
config_file_choice choose_config_file(const std::vector<std::string_view>& argv);

/// Reads the chosen file and exports each of its settings into this process's environment
/// unless the environment already has that variable, so that precedence is flags, then
/// environment, then file (CLI11 reads the environment for every `envname`). Returns the
/// path read, or an empty path when the default file does not exist. Throws
/// config_file_error when an explicitly named file is missing, any file is unreadable or
/// malformed. Warns on stderr when the file is readable by others than its owner and group
/// (it holds the database password and the service tokens). Not thread-safe (setenv): call
/// it before starting threads.
std::filesystem::path load_config_file(const config_file_choice& choice,
                                       const std::set<std::string>& known_keys);

/// The whole start-up step for `litterboxd`: adds `--config PATH` to every subcommand of
/// `app` (so `--help` shows it), chooses the file from argv, the environment or the default,
/// and loads it with the environment names of every option of every subcommand as the known
/// keys (one file serves serve, reap and migrate alike). Call after all options are added and
/// before app.parse(). Throws config_file_error.
void apply_config_file(CLI::App& app, int argc, const char* const* argv);

}  // namespace litterbox::litterboxd
