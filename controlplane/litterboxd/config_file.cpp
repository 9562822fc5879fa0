#include "controlplane/litterboxd/config_file.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <utility>

namespace litterbox::litterboxd {
namespace {

std::string_view strip(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

std::string where(std::string_view origin, int line) {
  return std::string(origin) + ":" + std::to_string(line);
}

}  // namespace

std::map<std::string, std::string> parse_config_file(std::string_view text,
                                                     const std::set<std::string>& known_keys,
                                                     std::string_view origin) {
  std::map<std::string, std::string> out;
  int number = 0;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    auto line = strip(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    ++number;
    if (line.empty() || line.front() == '#') {
      continue;
    }
    if (line.starts_with("export ") || line.starts_with("export\t")) {
      line = strip(line.substr(7));
    }
    const auto eq = line.find('=');
    if (eq == std::string_view::npos) {
      throw config_file_error(where(origin, number) + ": expected KEY=value");
    }
    const std::string key(strip(line.substr(0, eq)));
    auto value = strip(line.substr(eq + 1));
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') &&
        value.back() == value.front()) {
      value = value.substr(1, value.size() - 2);
    }
    if (key.empty()) {
      throw config_file_error(where(origin, number) + ": expected KEY=value");
    }
    if (!known_keys.contains(key)) {
      throw config_file_error(where(origin, number) + ": unknown setting " + key +
                              " (the keys are the environment variables of README "
                              "\"Configuration\")");
    }
    if (!out.emplace(key, std::string(value)).second) {
      throw config_file_error(where(origin, number) + ": " + key + " is set twice");
    }
  }
  return out;
}

config_file_choice choose_config_file(const std::vector<std::string_view>& argv) {
  for (std::size_t i = 0; i < argv.size(); ++i) {
    const auto a = argv[i];
    if (a == "--") {
      break;
    }
    if (a == "--config" && i + 1 < argv.size()) {
      return {std::filesystem::path(argv[i + 1]), true};
    }
    if (a.starts_with("--config=")) {
      return {std::filesystem::path(a.substr(9)), true};
    }
  }
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read before any thread starts
  if (const char* env = std::getenv("LITTERBOX_CONFIG"); env != nullptr && *env != '\0') {
    return {std::filesystem::path(env), true};
  }
  return {std::filesystem::path(k_default_config_path), false};
}

std::filesystem::path load_config_file(const config_file_choice& choice,
                                       const std::set<std::string>& known_keys) {
  const auto& path = choice.path;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    if (err == ENOENT && !choice.explicit_choice) {
      return {};
    }
    throw config_file_error("cannot read the configuration file " + path.string() + ": " +
                            std::strerror(err));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    throw config_file_error("cannot read the configuration file " + path.string());
  }
  const auto settings = parse_config_file(text.str(), known_keys, path.string());
  struct stat st {};
  // Only a regular file can hold secrets; /dev/null (an empty configuration) is world-readable
  // by nature.
  if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & S_IROTH) != 0) {
    std::fprintf(stderr,
                 "litterboxd: warning: %s is readable by every user but holds secrets; "
                 "chmod 0600 it\n",
                 path.c_str());
  }
  for (const auto& [key, value] : settings) {
    // overwrite=0: the environment wins over the file.
    if (::setenv(key.c_str(), value.c_str(), 0) != 0) {  // NOLINT(concurrency-mt-unsafe)
      throw config_file_error("cannot apply " + key + " from " + path.string());
    }
  }
  return path;
}

void apply_config_file(CLI::App& app, int argc, const char* const* argv) {
  std::set<std::string> known;
  for (auto* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    for (const auto* opt : sub->get_options()) {
      if (!opt->get_envname().empty()) {
        known.insert(opt->get_envname());
      }
    }
    sub->add_option("--config")
        ->description("Configuration file of KEY=value lines (default: $LITTERBOX_CONFIG or " +
                      std::string(k_default_config_path) +
                      "); the environment and flags override it");
  }
  std::vector<std::string_view> args;
  for (int i = 1; i < argc; ++i) {
    args.emplace_back(argv[i]);
  }
  load_config_file(choose_config_file(args), known);
}

}  // namespace litterbox::litterboxd
