#include "schema/doctor.hpp"

#include "schema/errc.hpp"

#include <nlohmann/json.hpp>

namespace litterbox::schema {

std::string doctor_json(const doctor_report& report) {
  nlohmann::ordered_json j;
  j["ok"] = report.ok;
  j["active_provider"] = report.active_provider;
  auto checks = nlohmann::ordered_json::array();
  for (const auto& c : report.checks) {
    nlohmann::ordered_json item;
    item["name"] = c.name;
    item["status"] = c.ok ? "ok" : "fail";
    item["detail"] = c.detail;
    item["latency_ms"] = c.latency_ms;
    item["hint"] = c.hint;
    checks.push_back(std::move(item));
  }
  j["checks"] = std::move(checks);
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

result<doctor_report> doctor_from_json(std::string_view text) {
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) {
    return make_error(errc::invalid_json, "the doctor report is not a JSON object");
  }
  auto text_of = [](const nlohmann::json& o, const char* key) {
    const auto it = o.find(key);
    return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  doctor_report out;
  if (const auto ok = j.find("ok"); ok != j.end() && ok->is_boolean()) {
    out.ok = ok->get<bool>();
  }
  out.active_provider = text_of(j, "active_provider");
  if (const auto it = j.find("checks"); it != j.end()) {
    if (!it->is_array()) {
      return make_error(errc::invalid_json, "the doctor report's checks are not a list");
    }
    for (const auto& c : *it) {
      if (!c.is_object()) {
        return make_error(errc::invalid_json, "a doctor check is not an object");
      }
      doctor_check check;
      check.name = text_of(c, "name");
      check.ok = text_of(c, "status") == "ok";
      check.detail = text_of(c, "detail");
      if (const auto l = c.find("latency_ms"); l != c.end() && l->is_number()) {
        check.latency_ms = l->get<double>();
      }
      check.hint = text_of(c, "hint");
      out.checks.push_back(std::move(check));
    }
  }
  return out;
}

}  // namespace litterbox::schema
