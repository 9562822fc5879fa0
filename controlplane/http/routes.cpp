#include "controlplane/http/routes.hpp"

#include <cstddef>

namespace litterbox::controlplane::http {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

std::vector<std::string_view> split_segments(std::string_view path) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (true) {
    const auto slash = path.find('/', start);
    out.push_back(path.substr(start, slash == std::string_view::npos ? slash : slash - start));
    if (slash == std::string_view::npos) {
      return out;
    }
    start = slash + 1;
  }
}

}  // namespace

const std::vector<route>& routes() {
  static const std::vector<route> table{
      {route_id::hosts, "/hosts", {"GET", "POST"}, true},
      {route_id::host, "/hosts/{host_id}", {"GET", "DELETE"}, true},
      {route_id::host_renew, "/hosts/{host_id}/renew", {"POST"}, true},
      {route_id::host_console, "/hosts/{host_id}/console", {"GET"}, true},
      {route_id::healthz, "/healthz", {"GET"}, false},
      {route_id::doctor, "/doctor", {"GET"}, true},
      {route_id::metrics, "/metrics", {"GET"}, false},
      {route_id::openapi, "/openapi.json", {"GET"}, false},
      {route_id::events, "/events", {"GET"}, true},
      {route_id::host_events, "/hosts/{host_id}/events", {"GET"}, true},
  };
  return table;
}

std::string_view method_label(std::string_view method) {
  static constexpr std::string_view k_known[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                                 "CONNECT", "OPTIONS", "TRACE", "PATCH"};
  for (const auto known : k_known) {
    if (method == known) {
      return known;
    }
  }
  return "other";
}

std::vector<std::pair<std::string, std::string>> operations() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& r : routes()) {
    for (const auto m : r.methods) {
      out.emplace_back(std::string(m), std::string(r.path));
    }
  }
  return out;
}

std::optional<route_match> match_route(std::string_view path) {
  const auto path_segments = split_segments(path);
  for (const auto& r : routes()) {
    const auto tmpl_segments = split_segments(r.path);
    if (tmpl_segments.size() != path_segments.size()) {
      continue;
    }
    route_match m{&r, {}};
    bool ok = true;
    for (std::size_t i = 0; ok && i < tmpl_segments.size(); ++i) {
      const auto t = tmpl_segments[i];
      if (t.size() > 1 && t.front() == '{' && t.back() == '}') {
        ok = !path_segments[i].empty();
        m.host_id = percent_decode(path_segments[i]);
      } else {
        ok = t == path_segments[i];
      }
    }
    if (ok) {
      return m;
    }
  }
  return std::nullopt;
}

bool allows(const route& r, std::string_view method) {
  for (const auto m : r.methods) {
    if (m == method) {
      return true;
    }
  }
  return false;
}

std::string allow_header(const route& r) {
  std::string out;
  for (const auto m : r.methods) {
    if (!out.empty()) {
      out += ", ";
    }
    out += m;
  }
  return out;
}

std::string percent_decode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%' && i + 2 < text.size()) {
      const int hi = hex_value(text[i + 1]);
      const int lo = hex_value(text[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(plus_is_space && c == '+' ? ' ' : c);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> parse_query(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> out;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (part.empty()) {
      continue;
    }
    const auto eq = part.find('=');
    const auto name = part.substr(0, eq);
    const auto value = eq == std::string_view::npos ? std::string_view{} : part.substr(eq + 1);
    out.emplace_back(percent_decode(name, true), percent_decode(value, true));
  }
  return out;
}

std::string percent_encode(std::string_view text) {
  static constexpr char k_digits[] = "0123456789ABCDEF";
  std::string out;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(k_digits[u >> 4U]);
      out.push_back(k_digits[u & 0xFU]);
    }
  }
  return out;
}

}  // namespace litterbox::controlplane::http
