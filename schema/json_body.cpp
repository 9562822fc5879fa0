#include "schema/json_body.hpp"

#include "schema/errc.hpp"

namespace litterbox::schema {

result<nlohmann::json> parse_json_body(std::string_view body, int max_depth) {
  using json = nlohmann::json;
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    return json(nullptr);
  }
  bool too_deep = false;
  json::parser_callback_t limit_depth =
      [&too_deep, max_depth](int depth, json::parse_event_t /*event*/, json& /*parsed*/) {
        if (depth > max_depth) {
          too_deep = true;
          return false;
        }
        return true;
      };
  json j = json::parse(body, limit_depth, false);
  if (too_deep || j.is_discarded()) {
    error e = make_error(errc::invalid_json, "JSON decode error");
    e.issues.push_back(
        field_issue{{"body"},
                    too_deep ? "JSON decode error: nesting too deep" : "JSON decode error",
                    "json_invalid"});
    return e;
  }
  return j;
}

}  // namespace litterbox::schema
