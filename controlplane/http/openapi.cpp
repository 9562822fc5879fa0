#include "controlplane/http/openapi.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <set>
#include <stdexcept>
#include <string_view>
#include <vector>

namespace litterbox::schema::embedded {
extern const std::string_view openapi_json;
}  // namespace litterbox::schema::embedded

namespace litterbox::controlplane::http {
namespace {

using json = nlohmann::ordered_json;

/// The keys of an OpenAPI path item that are operations; the others ("parameters",
/// "summary", …) belong to every operation of the path.
bool is_method(std::string_view key) {
  static const std::set<std::string_view> methods{"get",     "put",  "post",  "delete",
                                                  "options", "head", "patch", "trace"};
  return methods.contains(key);
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (auto& c : out) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

std::string upper(std::string_view text) {
  std::string out(text);
  for (auto& c : out) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return out;
}

[[noreturn]] void disagree(const std::string& what) {
  throw std::logic_error("the route table and schema/openapi.json disagree: " + what);
}

/// The path items of `p`: every route with an operation `p` lists, in table order, with the
/// description of each listed operation.
json paths_of(const json& described, wire_profile p, const std::vector<route>& table) {
  json out = json::object();
  std::set<std::string> routed;
  for (const auto& r : table) {
    const std::string path(r.path);
    routed.insert(path);
    const auto it = described.find(path);
    if (it == described.end()) {
      disagree(path + " is routed but not described");
    }
    for (const auto& op : r.operations) {
      if (!it->contains(lower(op.method))) {
        disagree(std::string(op.method) + " " + path + " is routed but not described");
      }
    }
    json item = json::object();
    bool listed = false;
    for (const auto& [key, value] : it->items()) {
      if (!is_method(key)) {
        item[key] = value;
        continue;
      }
      const auto op = std::find_if(r.operations.begin(), r.operations.end(),
                                   [&key](const operation& o) { return lower(o.method) == key; });
      if (op == r.operations.end()) {
        disagree(upper(key) + " " + path + " is described but not routed");
      }
      if (includes(op->listed, p)) {
        item[key] = value;
        listed = true;
      }
    }
    if (listed) {
      out[path] = std::move(item);
    }
  }
  for (const auto& [path, item] : described.items()) {
    if (!routed.contains(path)) {
      disagree(path + " is described but not routed");
    }
  }
  return out;
}

/// The Host schema of `p`: schema/openapi.json's (which must describe exactly the fields of
/// schema::to_json), cut to host_fields(p) with `p`'s status names.
json host_schema(const json& described, wire_profile p) {
  const auto& properties = described.at("properties");
  std::vector<std::string> keys;
  for (const auto& item : properties.items()) {
    keys.push_back(item.key());
  }
  if (keys != host_fields(wire_profile::litterbox) ||
      described.at("required") != json(host_fields(wire_profile::litterbox))) {
    disagree("the Host schema does not list the fields of schema::to_json in their order");
  }
  if (p == wire_profile::litterbox) {
    return described;
  }
  json out = described;
  out["required"] = host_fields(p);
  json cut = json::object();
  for (const auto& field : host_fields(p)) {
    cut[field] = properties.at(field);
  }
  json statuses = json::array();
  for (const auto& name : properties.at("status").at("enum")) {
    const auto status = schema::parse_host_status(name.get<std::string>());
    if (!status) {
      disagree("the Host schema names an unknown status " + name.dump());
    }
    const json shown = status_name(*status, p);
    if (std::find(statuses.begin(), statuses.end(), shown) == statuses.end()) {
      statuses.push_back(shown);
    }
  }
  cut["status"]["enum"] = std::move(statuses);
  out["properties"] = std::move(cut);
  return out;
}

/// `components` with the Host schema of `p` and the schemas `p`'s overlay replaces.
json components_of(const json& described, const json& overlay, wire_profile p) {
  json out = described;
  auto& schemas = out.at("schemas");
  schemas["Host"] = host_schema(described.at("schemas").at("Host"), p);
  if (const auto it = overlay.find("components"); it != overlay.end()) {
    const auto replaced = it->value("schemas", json::object());
    for (const auto& [name, schema] : replaced.items()) {
      schemas[name] = schema;
    }
  }
  return out;
}

}  // namespace

std::string openapi_document(wire_profile p) {
  return openapi_document(p, routes(), schema::embedded::openapi_json);
}

std::string openapi_document(wire_profile p, const std::vector<route>& table,
                             std::string_view descriptions) {
  const auto source = json::parse(descriptions);
  const auto overlay =
      source.value("x-profiles", json::object()).value(std::string(to_string(p)), json::object());
  json out = json::object();
  for (const auto& [key, value] : source.items()) {
    if (key == "x-profiles") {
      continue;
    }
    if (key == "paths") {
      out[key] = paths_of(value, p, table);
    } else if (key == "components") {
      out[key] = components_of(value, overlay, p);
    } else {
      out[key] = overlay.contains(key) ? overlay[key] : value;
    }
    if (key == "info") {
      // What the overlay adds (servers: where the profile's paths are rooted) follows info.
      for (const auto& [extra, v] : overlay.items()) {
        if (extra != "components" && !source.contains(extra)) {
          out[extra] = v;
        }
      }
    }
  }
  // Pretty-printed with non-ASCII escaped, as schema/openapi.json itself is written.
  return out.dump(2, ' ', true) + "\n";
}

}  // namespace litterbox::controlplane::http
