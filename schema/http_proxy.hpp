#pragma once

#include "base/result.hpp"

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace litterbox::schema {

/// An origin: what an HTTP proxy forwards to (API.md "HTTP proxies").
struct origin {
  std::string scheme;  ///< "http" or "https"
  std::string host;    ///< a DNS name (lower-cased) or an IP literal (IPv6 without brackets)
  int port = 0;        ///< explicit or the scheme's default
  std::string text;    ///< the canonical spelling: "https://api.example.com:8443"
};

/// Parses `text` as an origin: http or https, a host, an optional port; no credentials, path
/// (a lone trailing "/" is accepted and dropped), query or fragment. The error message never
/// repeats `text`.
result<origin> parse_origin(std::string_view text);

/// True if `name` is an HTTP proxy name: 1–63 of a-z 0-9 -, starting with a letter or digit.
bool valid_http_proxy_name(std::string_view name);

/// The body of POST /http-proxies after every shape rule of API.md: a valid name, an origin
/// and a non-empty object of valid header names (RFC 9110 tokens, no two equal ignoring
/// case) to values without CR, LF or NUL. Whether the target's address may be reached is the
/// control plane's rule.
struct create_http_proxy_request {
  std::string name;
  origin target;
  std::vector<std::pair<std::string, std::string>> headers;
};

/// Parses a POST /http-proxies body; every problem is reported (errc::invalid_json /
/// invalid_field with `issues`, loc ["body", <field>]). No message or issue ever carries a
/// header value.
result<create_http_proxy_request> parse_create_http_proxy_request(std::string_view body);

}  // namespace litterbox::schema
