#include "controlplane/http/openapi.hpp"

#include "controlplane/http/routes.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace litterbox::schema::embedded {
extern const std::string_view openapi_json;
}  // namespace litterbox::schema::embedded

namespace litterbox::controlplane::http {
namespace {

using json = nlohmann::ordered_json;
using operation_set = std::set<std::pair<std::string, std::string>>;

json document(wire_profile p) {
  return json::parse(openapi_document(p));
}

operation_set operations_of(const json& doc) {
  static const std::set<std::string> verbs{"get",     "put",  "post",  "delete",
                                           "options", "head", "patch", "trace"};
  operation_set out;
  for (const auto& [path, item] : doc.at("paths").items()) {
    for (const auto& [key, op] : item.items()) {
      if (verbs.contains(key)) {
        std::string method = key;
        for (auto& c : method) {
          c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        }
        out.emplace(method, path);
      }
    }
  }
  return out;
}

std::vector<std::string> keys_of(const json& j) {
  std::vector<std::string> keys;
  for (const auto& item : j.items()) {
    keys.push_back(item.key());
  }
  return keys;
}

/// Every "$ref" in `j`.
void collect_refs(const json& j, std::set<std::string>& out) {
  if (j.is_object()) {
    for (const auto& [key, value] : j.items()) {
      if (key == "$ref" && value.is_string()) {
        out.insert(value.get<std::string>());
      } else {
        collect_refs(value, out);
      }
    }
  } else if (j.is_array()) {
    for (const auto& item : j) {
      collect_refs(item, out);
    }
  }
}

TEST(OpenApi, EachProfileListsExactlyTheOperationsTheRouteTableListsForIt) {
  for (const auto p : k_wire_profiles) {
    const auto listed = listed_operations(p);
    const operation_set expected(listed.begin(), listed.end());
    EXPECT_EQ(expected.size(), listed.size()) << to_string(p) << ": an operation twice";
    EXPECT_EQ(operations_of(document(p)), expected) << to_string(p);
  }
}

TEST(OpenApi, EveryListedOperationIsServedInItsProfile) {
  for (const auto p : k_wire_profiles) {
    for (const auto& [method, path] : listed_operations(p)) {
      const auto m = match_route(std::string(path_prefix(p)) + path);
      ASSERT_TRUE(m) << to_string(p) << ' ' << method << ' ' << path;
      EXPECT_EQ(m->profile, p);
      EXPECT_TRUE(allows(*m->matched, method, p)) << to_string(p) << ' ' << method << ' ' << path;
    }
  }
}

TEST(OpenApi, DrukboxListsExactlyDrukboxOperationsRootedUnderItsPrefix) {
  // API.md "Wire profiles": drukbox's ten operations.
  const operation_set drukbox{{"POST", "/hosts"},
                              {"GET", "/hosts"},
                              {"GET", "/hosts/{host_id}"},
                              {"DELETE", "/hosts/{host_id}"},
                              {"POST", "/hosts/{host_id}/renew"},
                              {"GET", "/doctor"},
                              {"POST", "/http-proxies"},
                              {"DELETE", "/http-proxies/{name}"},
                              {"POST", "/http-proxies/{name}/hosts/{host_id}"},
                              {"DELETE", "/http-proxies/{name}/hosts/{host_id}"}};
  const auto doc = document(wire_profile::drukbox);
  EXPECT_EQ(operations_of(doc), drukbox);
  ASSERT_TRUE(doc.contains("servers")) << doc.dump();
  EXPECT_EQ(doc["servers"].at(0).at("url"), "/drukbox");
  EXPECT_FALSE(doc.contains("x-profiles"));
}

TEST(OpenApi, LitterboxDocumentIsTheDescriptionsWithoutTheProfileSection) {
  auto source = json::parse(schema::embedded::openapi_json);
  ASSERT_TRUE(source.contains("x-profiles"));
  source.erase("x-profiles");
  // Every described operation is a litterbox one, so nothing is left out, nothing reordered.
  EXPECT_EQ(document(wire_profile::litterbox), source);
  EXPECT_FALSE(document(wire_profile::litterbox).contains("servers"));
}

TEST(OpenApi, IsVersion3WithEveryReferenceResolved) {
  for (const auto p : k_wire_profiles) {
    const auto doc = document(p);
    EXPECT_EQ(doc.at("openapi").get<std::string>().substr(0, 2), "3.") << to_string(p);
    std::set<std::string> refs;
    collect_refs(doc, refs);
    EXPECT_FALSE(refs.empty());
    for (const auto& ref : refs) {
      const std::string prefix = "#/components/schemas/";
      ASSERT_TRUE(ref.starts_with(prefix)) << ref;
      EXPECT_TRUE(doc.at("components").at("schemas").contains(ref.substr(prefix.size())))
          << to_string(p) << ": " << ref << " is not defined";
    }
  }
}

TEST(OpenApi, HostSchemaOfEachProfileIsTheShapeItRenders) {
  for (const auto p : k_wire_profiles) {
    const auto doc = document(p);
    const auto& host = doc.at("components").at("schemas").at("Host");
    const json fields(host_fields(p));
    EXPECT_EQ(host.at("required"), fields) << to_string(p);
    EXPECT_EQ(json(keys_of(host.at("properties"))), fields) << to_string(p);
    EXPECT_EQ(json(keys_of(host_json(schema::host{}, p))), fields) << to_string(p);
  }
}

TEST(OpenApi, DrukboxStatusEnumHasNoPullingImage) {
  const auto doc = document(wire_profile::drukbox);
  const auto& status = doc.at("components").at("schemas").at("Host").at("properties").at("status");
  EXPECT_EQ(status.at("enum"), json::parse(R"(["provisioning", "creating_vm", "bootstrapping",
                                                "active", "deleting", "error"])"));
}

TEST(OpenApi, DoctorSchemaOfEachProfileIsTheShapeItRenders) {
  schema::doctor_report report;
  report.active_provider = "fake";
  report.checks = {{"database", true, "connected", 1.0, ""}};
  for (const auto p : k_wire_profiles) {
    const auto doc = document(p);
    const auto& described = doc.at("components").at("schemas").at("DoctorReport");
    const auto body = json::parse(doctor_body(report, p));
    EXPECT_EQ(described.at("required"), json(keys_of(body))) << to_string(p);
    EXPECT_EQ(json(keys_of(described.at("properties"))), json(keys_of(body))) << to_string(p);
    const auto& check = described.at("properties").at("checks").at("items");
    EXPECT_EQ(check.at("required"), json(keys_of(body.at("checks").at(0)))) << to_string(p);
  }
  const auto drukbox = document(wire_profile::drukbox);
  const auto& drukbox_check = drukbox.at("components")
                                  .at("schemas")
                                  .at("DoctorReport")
                                  .at("properties")
                                  .at("checks")
                                  .at("items")
                                  .at("properties");
  EXPECT_EQ(drukbox_check.at("latency_ms").at("type"), "integer");
  EXPECT_EQ(drukbox_check.at("latency_ms").at("nullable"), true);
}

/// schema/openapi.json with its paths replaced by `paths`.
std::string with_paths(const json& paths) {
  auto source = json::parse(schema::embedded::openapi_json);
  source["paths"] = paths;
  return source.dump();
}

const std::vector<route>& one_route() {
  static const std::vector<route> table{
      {route_id::hosts, "/hosts", {{"GET", profiles::both, profiles::litterbox}}, true}};
  return table;
}

TEST(OpenApi, OnlyTheProfilesThatListAnOperationDocumentIt) {
  const auto text = with_paths(json::parse(R"({"/hosts": {"get": {"summary": "x"}}})"));
  const auto litterbox = json::parse(openapi_document(wire_profile::litterbox, one_route(), text));
  const auto drukbox = json::parse(openapi_document(wire_profile::drukbox, one_route(), text));
  EXPECT_EQ(operations_of(litterbox), (operation_set{{"GET", "/hosts"}}));
  EXPECT_EQ(operations_of(drukbox), operation_set{});
}

TEST(OpenApi, ARoutedOperationWithoutADescriptionFailsTheDocument) {
  EXPECT_THROW(openapi_document(wire_profile::litterbox, one_route(), with_paths(json::object())),
               std::logic_error);
  EXPECT_THROW(openapi_document(wire_profile::litterbox, one_route(),
                                with_paths(json::parse(R"({"/hosts": {"parameters": []}})"))),
               std::logic_error);
}

TEST(OpenApi, ADescribedOperationThatIsNotRoutedFailsTheDocument) {
  EXPECT_THROW(openapi_document(wire_profile::drukbox, one_route(),
                                with_paths(json::parse(R"({"/hosts": {"get": {}, "put": {}}})"))),
               std::logic_error);
  EXPECT_THROW(openapi_document(wire_profile::drukbox, one_route(),
                                with_paths(json::parse(R"({"/hosts": {"get": {}},
                                                           "/extra": {"get": {}}})"))),
               std::logic_error);
}

TEST(OpenApi, AHostSchemaThatIsNotTheRenderedHostFailsTheDocument) {
  auto source = json::parse(schema::embedded::openapi_json);
  source["components"]["schemas"]["Host"]["properties"].erase("cpus");
  EXPECT_THROW(openapi_document(wire_profile::litterbox, routes(), source.dump()),
               std::logic_error);
}

TEST(OpenApi, IsPrettyPrintedAsciiEndingInANewline) {
  for (const auto p : k_wire_profiles) {
    const auto text = openapi_document(p);
    EXPECT_TRUE(text.starts_with("{\n  \"openapi\": ")) << to_string(p);
    EXPECT_TRUE(text.ends_with("}\n")) << to_string(p);
    for (const char c : text) {
      ASSERT_LT(static_cast<unsigned char>(c), 0x80U) << to_string(p) << ": non-ASCII byte";
    }
  }
}

}  // namespace
}  // namespace litterbox::controlplane::http
