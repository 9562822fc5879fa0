#include "controlplane/http/routes.hpp"

#include <algorithm>
#include <charconv>
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

bool includes(profiles set, wire_profile p) {
  const auto bit = p == wire_profile::drukbox ? profiles::drukbox : profiles::litterbox;
  return (static_cast<unsigned>(set) & static_cast<unsigned>(bit)) != 0U;
}

const std::vector<route>& routes() {
  constexpr auto litterbox = profiles::litterbox;
  constexpr auto both = profiles::both;
  // The HTTP proxy operations of API.md are served (and listed) in both profiles, except
  // GET /http-proxies, which is litterbox's only.
  static const std::vector<route> table{
      {route_id::hosts, "/hosts", {{"GET", both, both}, {"POST", both, both}}, true},
      {route_id::host, "/hosts/{host_id}", {{"GET", both, both}, {"DELETE", both, both}}, true},
      {route_id::host_renew, "/hosts/{host_id}/renew", {{"POST", both, both}}, true},
      {route_id::host_console, "/hosts/{host_id}/console", {{"GET", litterbox, litterbox}}, true},
      {route_id::http_proxies,
       "/http-proxies",
       {{"GET", litterbox, litterbox}, {"POST", both, both}},
       true},
      {route_id::http_proxy, "/http-proxies/{name}", {{"DELETE", both, both}}, true},
      {route_id::http_proxy_host,
       "/http-proxies/{name}/hosts/{host_id}",
       {{"POST", both, both}, {"DELETE", both, both}},
       true},
      {route_id::healthz, "/healthz", {{"GET", both, litterbox}}, false},
      {route_id::doctor, "/doctor", {{"GET", both, both}}, true},
      {route_id::metrics, "/metrics", {{"GET", litterbox, litterbox}}, false},
      {route_id::openapi, "/openapi.json", {{"GET", both, litterbox}}, false},
      // The event stream is litterbox's alone (API.md "Events"): not in the drukbox profile.
      {route_id::events, "/events", {{"GET", litterbox, litterbox}}, true},
      {route_id::host_events, "/hosts/{host_id}/events", {{"GET", litterbox, litterbox}}, true},
      // Tenants (API.md "Tenants: scoped keys"): the admin's, in the litterbox profile only.
      {route_id::keys,
       "/keys",
       {{"GET", litterbox, litterbox}, {"POST", litterbox, litterbox}},
       true,
       true},
      {route_id::key, "/keys/{id}", {{"DELETE", litterbox, litterbox}}, true, true},
      {route_id::audit, "/audit", {{"GET", litterbox, litterbox}}, true, true},
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

std::vector<std::pair<std::string, std::string>> listed_operations(wire_profile p) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& r : routes()) {
    for (const auto& op : r.operations) {
      if (includes(op.listed, p)) {
        out.emplace_back(std::string(op.method), std::string(r.path));
      }
    }
  }
  return out;
}

std::string_view route_match::param(std::string_view name) const {
  for (const auto& [key, value] : params) {
    if (key == name) {
      return value;
    }
  }
  return {};
}

std::optional<route_match> match_route(std::string_view path) {
  return match_route(path, routes());
}

std::optional<route_match> match_route(std::string_view path, const std::vector<route>& table) {
  auto profile = wire_profile::litterbox;
  const auto drukbox = path_prefix(wire_profile::drukbox);
  if (path.size() > drukbox.size() && path.starts_with(drukbox) && path[drukbox.size()] == '/') {
    profile = wire_profile::drukbox;
    path.remove_prefix(drukbox.size());
  }
  const auto path_segments = split_segments(path);
  for (const auto& r : table) {
    const bool in_profile =
        std::any_of(r.operations.begin(), r.operations.end(),
                    [profile](const operation& op) { return includes(op.served, profile); });
    const auto tmpl_segments = split_segments(r.path);
    if (!in_profile || tmpl_segments.size() != path_segments.size()) {
      continue;
    }
    route_match m{&r, profile, {}, {}};
    bool ok = true;
    for (std::size_t i = 0; ok && i < tmpl_segments.size(); ++i) {
      const auto t = tmpl_segments[i];
      if (t.size() > 2 && t.front() == '{' && t.back() == '}') {
        ok = !path_segments[i].empty();
        const auto name = t.substr(1, t.size() - 2);
        m.params.emplace_back(name, percent_decode(path_segments[i]));
        if (name == "host_id") {
          m.host_id = m.params.back().second;
        }
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

std::string route_label(const route_match& m) {
  return std::string(path_prefix(m.profile)) + std::string(m.matched->path);
}

bool allows(const route& r, std::string_view method, wire_profile p) {
  return std::any_of(r.operations.begin(), r.operations.end(), [&](const operation& op) {
    return op.method == method && includes(op.served, p);
  });
}

std::string allow_header(const route& r, wire_profile p) {
  std::string out;
  for (const auto& op : r.operations) {
    if (!includes(op.served, p)) {
      continue;
    }
    if (!out.empty()) {
      out += ", ";
    }
    out += op.method;
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

std::optional<std::int64_t> parse_non_negative(std::string_view text) {
  std::int64_t v = 0;
  const auto* end = text.data() + text.size();
  const auto [p, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec != std::errc{} || p != end || v < 0) {
    return std::nullopt;
  }
  return v;
}

}  // namespace litterbox::controlplane::http
