#include "schema/http_proxy.hpp"

#include "schema/errc.hpp"
#include "schema/json_body.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <arpa/inet.h>
#include <cctype>
#include <charconv>

namespace litterbox::schema {
namespace {

using json = nlohmann::json;

constexpr int k_max_depth = 16;
constexpr std::size_t k_max_header_value = 8 * 1024;

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool is_tchar(char c) {
  static constexpr std::string_view k_extra = "!#$%&'*+-.^_`|~";
  return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
         k_extra.find(c) != std::string_view::npos;
}

bool valid_header_name(std::string_view name) {
  return !name.empty() && name.size() <= 256 && std::all_of(name.begin(), name.end(), is_tchar);
}

// Headers that frame the message or name the connection: a proxy that set them would break
// the forwarding, not add a credential.
bool framing_header(std::string_view folded) {
  static constexpr std::string_view k_framing[] = {
      "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
      "te",   "trailer",        "proxy-connection",  "expect"};
  return std::find(std::begin(k_framing), std::end(k_framing), folded) != std::end(k_framing);
}

bool valid_header_value(std::string_view value) {
  return value.size() <= k_max_header_value &&
         value.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

bool valid_dns_name(std::string_view host) {
  if (host.empty() || host.size() > 253) {
    return false;
  }
  std::size_t label = 0;
  char prev = '.';
  for (const char c : host) {
    if (c == '.') {
      if (label == 0 || prev == '-') {
        return false;
      }
      label = 0;
    } else if (std::isalnum(static_cast<unsigned char>(c)) != 0 || (c == '-' && label != 0)) {
      if (++label > 63) {
        return false;
      }
    } else {
      return false;
    }
    prev = c;
  }
  return prev != '-' && prev != '.';
}

error origin_error(std::string msg) {
  return make_error(errc::invalid_field, std::move(msg));
}

}  // namespace

bool valid_http_proxy_name(std::string_view name) {
  if (name.empty() || name.size() > 63 || name.front() == '-') {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

result<origin> parse_origin(std::string_view text) {
  origin out;
  const auto sep = text.find("://");
  if (sep == std::string_view::npos) {
    return origin_error("target must be an http or https origin (scheme://host[:port])");
  }
  out.scheme = lower(text.substr(0, sep));
  if (out.scheme != "http" && out.scheme != "https") {
    return origin_error("target scheme must be http or https");
  }
  auto rest = text.substr(sep + 3);
  if (rest.ends_with('/')) {
    rest.remove_suffix(1);
  }
  if (rest.find_first_of("/?#") != std::string_view::npos) {
    return origin_error("target must be an origin: no path, query or fragment");
  }
  if (rest.find('@') != std::string_view::npos) {
    return origin_error("target must not carry credentials");
  }
  std::string_view host;
  std::string_view port_text;
  if (rest.starts_with('[')) {
    const auto close = rest.find(']');
    if (close == std::string_view::npos) {
      return origin_error("target host is not valid");
    }
    host = rest.substr(1, close - 1);
    const auto after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        return origin_error("target host is not valid");
      }
      port_text = after.substr(1);
      if (port_text.empty()) {
        return origin_error("target port must be 1-65535");
      }
    }
    in6_addr v6{};
    if (inet_pton(AF_INET6, std::string(host).c_str(), &v6) != 1) {
      return origin_error("target host is not valid");
    }
  } else {
    const auto colon = rest.rfind(':');
    host = rest.substr(0, colon);
    if (colon != std::string_view::npos) {
      port_text = rest.substr(colon + 1);
      if (port_text.empty()) {
        return origin_error("target port must be 1-65535");
      }
    }
    if (!valid_dns_name(host)) {
      return origin_error("target host is not valid");
    }
  }
  out.host = lower(host);
  out.port = out.scheme == "https" ? 443 : 80;
  if (!port_text.empty()) {
    int port = 0;
    const auto [end, ec] =
        std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc() || end != port_text.data() + port_text.size() || port < 1 ||
        port > 65535) {
      return origin_error("target port must be 1-65535");
    }
    out.port = port;
  }
  const bool v6 = out.host.find(':') != std::string::npos;
  out.text = out.scheme + "://" + (v6 ? "[" + out.host + "]" : out.host);
  if (!port_text.empty()) {
    out.text += ":" + std::to_string(out.port);
  }
  return out;
}

result<create_http_proxy_request> parse_create_http_proxy_request(std::string_view body) {
  auto parsed = parse_json_body(body, k_max_depth);
  if (!parsed) {
    return parsed.error();
  }
  const json j = parsed->is_null() ? json::object() : std::move(*parsed);
  std::vector<field_issue> issues;
  if (!j.is_object()) {
    issues.push_back({{"body"},
                      "Input should be a valid dictionary or object to extract fields from",
                      "model_attributes_type"});
    error e = make_error(errc::invalid_field, "request validation failed");
    e.issues = std::move(issues);
    return e;
  }
  create_http_proxy_request out;
  const auto string_field = [&](const char* field) -> const json* {
    const auto it = j.find(field);
    if (it == j.end()) {
      issues.push_back({{"body", field}, "Field required", "missing"});
      return nullptr;
    }
    if (!it->is_string()) {
      issues.push_back({{"body", field}, "Input should be a valid string", "string_type"});
      return nullptr;
    }
    return &*it;
  };
  if (const auto* name = string_field("name")) {
    out.name = name->get<std::string>();
    if (!valid_http_proxy_name(out.name)) {
      issues.push_back({{"body", "name"},
                        "name must be 1-63 of a-z, 0-9 and -, starting with a letter or digit"});
    }
  }
  if (const auto* target = string_field("target")) {
    auto origin_parsed = parse_origin(target->get<std::string>());
    if (origin_parsed) {
      out.target = std::move(*origin_parsed);
    } else {
      issues.push_back({{"body", "target"}, origin_parsed.error().message});
    }
  }
  const auto headers = j.find("headers");
  if (headers == j.end()) {
    issues.push_back({{"body", "headers"}, "Field required", "missing"});
  } else if (!headers->is_object()) {
    issues.push_back({{"body", "headers"}, "Input should be a valid dictionary", "dict_type"});
  } else if (headers->empty()) {
    issues.push_back({{"body", "headers"}, "headers must name at least one header"});
  } else {
    std::vector<std::string> seen;
    for (const auto& [name, value] : headers->items()) {
      // The loc names the header; the message never repeats the value.
      if (!valid_header_name(name)) {
        issues.push_back({{"body", "headers"}, "header names must be HTTP tokens"});
        continue;
      }
      const auto folded = lower(name);
      if (std::find(seen.begin(), seen.end(), folded) != seen.end()) {
        issues.push_back({{"body", "headers", name}, "header named twice (ignoring case)"});
        continue;
      }
      seen.push_back(folded);
      if (framing_header(folded)) {
        issues.push_back({{"body", "headers", name}, "this header cannot be set by a proxy"});
        continue;
      }
      if (!value.is_string()) {
        issues.push_back(
            {{"body", "headers", name}, "Input should be a valid string", "string_type"});
        continue;
      }
      const auto text = value.get<std::string>();
      if (!valid_header_value(text)) {
        issues.push_back({{"body", "headers", name},
                          "header values must not contain CR, LF or NUL (at most 8 KiB)"});
        continue;
      }
      out.headers.emplace_back(name, text);
    }
  }
  if (!issues.empty()) {
    error e = make_error(errc::invalid_field, "request validation failed");
    e.issues = std::move(issues);
    return e;
  }
  return out;
}

}  // namespace litterbox::schema
