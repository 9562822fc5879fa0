#pragma once

#include "base/result.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace litterbox::schema {

/// One check of GET /doctor (API.md "Operational endpoints").
struct doctor_check {
  std::string name;
  bool ok = false;  ///< on the wire: "status": "ok" | "fail"
  std::string detail;
  double latency_ms = 0;
  std::string hint;
  friend bool operator==(const doctor_check&, const doctor_check&) = default;
};

/// The GET /doctor body: the one wire type the server writes and the client reads.
struct doctor_report {
  bool ok = false;
  std::string active_provider;
  std::vector<doctor_check> checks;
  friend bool operator==(const doctor_report&, const doctor_report&) = default;
};

/// `{"ok", "active_provider", "checks": [{"name", "status", "detail", "latency_ms", "hint"}]}`.
std::string doctor_json(const doctor_report& report);

/// Reads a GET /doctor body; unknown fields are ignored, missing ones default. Errors:
/// schema::errc::invalid_json when the text is not a JSON object of that shape.
result<doctor_report> doctor_from_json(std::string_view text);

}  // namespace litterbox::schema
