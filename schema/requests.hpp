#pragma once

#include "base/clock.hpp"
#include "base/result.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace litterbox::schema {

/// How a request spoke about `expires_at`: left it out, sent null, or sent a timestamp.
enum class expiry_kind { omitted, never, at };

/// The body of POST /hosts after type checks; rules that need configuration or the clock
/// (maxima, reserved env keys, "in the future") are checked by the control plane.
struct create_host_request {
  std::optional<std::string> image;
  std::optional<std::string> provider;
  std::optional<std::map<std::string, std::string>> env;
  expiry_kind expiry = expiry_kind::omitted;
  std::optional<timestamp> expires_at;
  std::optional<std::int64_t> cpus;
  std::optional<std::int64_t> memory_mib;
  std::optional<std::int64_t> disk_gb;
  std::optional<std::string> instance_type;
  std::optional<std::vector<std::string>> ssh_authorized_keys;
};

/// Parses a POST /hosts body. Empty text means `{}`; unknown fields are ignored. Every type
/// problem is reported (errc::invalid_json / invalid_field with `issues`, loc starting "body").
result<create_host_request> parse_create_host_request(std::string_view body);

/// A canonical text of the request (sorted keys, defaults spelled out) for idempotency
/// fingerprints: two bodies that mean the same request give the same text.
std::string canonical_text(const create_host_request& r);

/// The body of POST /hosts/{id}/renew: empty, `{}` or null → default lease (`expires_at`
/// nullopt); otherwise a timestamp with a zone.
struct renew_request {
  std::optional<timestamp> expires_at;
};

result<renew_request> parse_renew_request(std::string_view body);

/// The wire JSON of a create request (used by the client).
std::string to_json_text(const create_host_request& r);

}  // namespace litterbox::schema
