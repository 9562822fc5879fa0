#include "schema/errors.hpp"

#include "schema/errc.hpp"

#include <nlohmann/json.hpp>

namespace litterbox::schema {
namespace {

class category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "litterbox.schema"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::invalid_json:
        return "invalid JSON";
      case errc::invalid_field:
        return "invalid field";
    }
    return "unknown schema error";
  }
};

}  // namespace

const std::error_category& category() {
  static const category_impl instance;
  return instance;
}

std::string error_body(std::string_view detail, std::string_view error_code,
                       std::string_view request_id) {
  nlohmann::ordered_json j;
  j["detail"] = detail;
  j["error_code"] = error_code;
  if (!request_id.empty()) {
    j["request_id"] = request_id;
  }
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string detail_body(std::string_view detail) {
  nlohmann::ordered_json j;
  j["detail"] = detail;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string validation_body(const std::vector<field_issue>& issues) {
  auto list = nlohmann::ordered_json::array();
  for (const auto& i : issues) {
    nlohmann::ordered_json item;
    item["type"] = i.type;
    item["loc"] = i.loc;
    item["msg"] = i.msg;
    list.push_back(std::move(item));
  }
  nlohmann::ordered_json j;
  j["detail"] = std::move(list);
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

error_info parse_error_body(std::string_view body) {
  error_info info;
  const auto j = nlohmann::json::parse(body, nullptr, false);
  if (!j.is_object()) {
    info.detail = std::string(body.substr(0, 200));
    return info;
  }
  if (const auto it = j.find("detail"); it != j.end()) {
    if (it->is_string()) {
      info.detail = it->get<std::string>();
    } else if (it->is_array()) {
      for (const auto& item : *it) {
        if (!info.detail.empty()) {
          info.detail += "; ";
        }
        info.detail += item.value("msg", std::string{});
      }
    }
  }
  if (const auto it = j.find("error_code"); it != j.end() && it->is_string()) {
    info.error_code = it->get<std::string>();
  }
  return info;
}

}  // namespace litterbox::schema
