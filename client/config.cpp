#include "client/config.hpp"

#include "client/errc.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace litterbox::client {
namespace {

std::string_view trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) {
    return {};
  }
  const auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

bool valid_name(std::string_view name) {
  if (name.empty() || (std::isdigit(static_cast<unsigned char>(name.front())) != 0)) {
    return false;
  }
  for (const char c : name) {
    if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '_') {
      return false;
    }
  }
  return true;
}

/// Undoes POSIX shell quoting of one word: 'literal', "with \" \\ \$ \` escapes", bare words
/// with backslash escapes. Adjacent quoted parts concatenate, as in the shell.
std::string unquote(std::string_view v) {
  std::string out;
  std::size_t i = 0;
  while (i < v.size()) {
    const char c = v[i];
    if (c == '\'') {
      const auto end = v.find('\'', i + 1);
      const auto stop = end == std::string_view::npos ? v.size() : end;
      out.append(v.substr(i + 1, stop - i - 1));
      i = stop + 1;
    } else if (c == '"') {
      ++i;
      while (i < v.size() && v[i] != '"') {
        if (v[i] == '\\' && i + 1 < v.size() &&
            std::string_view("\"\\$`").find(v[i + 1]) != std::string_view::npos) {
          ++i;
        }
        out.push_back(v[i]);
        ++i;
      }
      ++i;
    } else if (c == '\\' && i + 1 < v.size()) {
      out.push_back(v[i + 1]);
      i += 2;
    } else if (c == ' ' || c == '\t' || c == '#') {
      // An unquoted blank ends the word; what follows is a comment or another word.
      break;
    } else {
      out.push_back(c);
      ++i;
    }
  }
  return out;
}

}  // namespace

std::map<std::string, std::string> parse_env_file(std::string_view text) {
  std::map<std::string, std::string> out;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const auto nl = text.find('\n', pos);
    const auto end = nl == std::string_view::npos ? text.size() : nl;
    auto line = trim(text.substr(pos, end - pos));
    pos = end + 1;
    if (line.empty() || line.front() == '#') {
      continue;
    }
    if (line.starts_with("export ") || line.starts_with("export\t")) {
      line = trim(line.substr(7));
    }
    const auto eq = line.find('=');
    if (eq == std::string_view::npos) {
      continue;
    }
    const auto name = line.substr(0, eq);
    if (!valid_name(name)) {
      continue;
    }
    out[std::string(name)] = unquote(line.substr(eq + 1));
  }
  return out;
}

std::optional<std::chrono::milliseconds> parse_timeout_seconds(std::string_view text) {
  const std::string s(trim(text));
  if (s.empty()) {
    return std::nullopt;
  }
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(v) || v <= 0 || v > 1e9) {
    return std::nullopt;
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(v * 1000.0)));
}

env_lookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    if (const char* v = std::getenv(name.c_str())) {  // NOLINT(concurrency-mt-unsafe)
      return std::string(v);
    }
    return std::nullopt;
  };
}

file_reader read_whole_file() {
  return [](const std::string& path) -> std::optional<std::string> {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      return std::nullopt;
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
}

std::string env_file_path(const env_lookup& env) {
  const auto dir = env("LITTERBOX_STATE_DIR");
  if (dir && !dir->empty()) {
    return *dir + "/env";
  }
  return "/var/lib/litterbox/env";
}

result<client_config> load_config(const env_lookup& env, const file_reader& read_file) {
  std::map<std::string, std::string> file;
  bool file_read = false;
  auto get = [&](const std::string& name) -> std::optional<std::string> {
    if (auto v = env(name); v && !v->empty()) {
      return v;
    }
    if (!file_read) {
      file_read = true;
      if (const auto text = read_file(env_file_path(env))) {
        file = parse_env_file(*text);
      }
    }
    if (const auto it = file.find(name); it != file.end() && !it->second.empty()) {
      return it->second;
    }
    return std::nullopt;
  };
  client_config cfg;
  auto url = get("SANDBOX_SERVICE_URL");
  if (!url) {
    return make_error(errc::invalid_argument,
                      "SANDBOX_SERVICE_URL is not set (and not in " + env_file_path(env) + ")");
  }
  while (!url->empty() && url->back() == '/') {
    url->pop_back();
  }
  if (!url->starts_with("http://") && !url->starts_with("https://")) {
    return make_error(errc::invalid_argument,
                      "SANDBOX_SERVICE_URL must start with http:// or https://");
  }
  cfg.url = *url;
  cfg.token = get("SANDBOX_SERVICE_TOKEN").value_or("");
  if (const auto t = get("SANDBOX_SERVICE_TIMEOUT")) {
    const auto ms = parse_timeout_seconds(*t);
    if (!ms) {
      return make_error(errc::invalid_argument,
                        "SANDBOX_SERVICE_TIMEOUT must be a positive number of seconds");
    }
    cfg.create_timeout = *ms;
    cfg.request_timeout = std::min(cfg.request_timeout, *ms);
  }
  return cfg;
}

}  // namespace litterbox::client
