// docs/api.md is the API reference shipped with the repository; this keeps it true to what
// the server serves: its table of operations, every operation its text names, and the
// served /openapi.json must agree.
#include "tests/support/http_client.hpp"
#include "tests/support/litterboxd_process.hpp"
#include "tests/support/pg_database.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>

namespace litterbox {
namespace {

/// "GET /hosts/{}": the method and the path with every parameter name erased, so that
/// `{id}` in prose and `{host_id}` in the table name the same operation.
std::string operation(std::string method, const std::string& path) {
  for (auto& c : method) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  static const std::regex param(R"(\{[^}]*\})");
  return method + " " + std::regex_replace(path, param, "{}");
}

std::string read_docs() {
  std::ifstream in(std::string(LB_DOCS_DIR) + "/api.md");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

/// The rows of the "## Operations" table: operation → "served" | "planned".
std::map<std::string, std::string> operations_table(const std::string& doc) {
  std::map<std::string, std::string> out;
  const auto start = doc.find("\n## Operations\n");
  if (start == std::string::npos) {
    return out;
  }
  const auto end = doc.find("\n## ", start + 1);
  std::istringstream in(doc.substr(start, end - start));
  static const std::regex row(
      R"(^\| `(GET|POST|PUT|PATCH|DELETE) (/\S*)` \| (served|planned) \|$)");
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_match(line, m, row)) {
      out[operation(m[1], m[2])] = m[3];
    }
  }
  return out;
}

/// Every operation the page names anywhere ("GET /x", "POST/GET /x"), except those of the
/// /drukbox profile, which has its own openapi.json.
std::set<std::string> operations_named(const std::string& doc) {
  std::set<std::string> out;
  static const std::regex mention(
      R"(\b((?:GET|POST|PUT|PATCH|DELETE)(?:/(?:GET|POST|PUT|PATCH|DELETE))*) (/[A-Za-z0-9_{}.\-/]*))");
  for (auto it = std::sregex_iterator(doc.begin(), doc.end(), mention);
       it != std::sregex_iterator(); ++it) {
    std::string path = (*it)[2];
    while (!path.empty() && path.back() == '.') {
      path.pop_back();
    }
    if (path.starts_with("/drukbox")) {
      continue;
    }
    std::istringstream methods((*it)[1]);
    std::string method;
    while (std::getline(methods, method, '/')) {
      out.insert(operation(method, path));
    }
  }
  return out;
}

std::set<std::string> operations_served() {
  test::test_database db;
  test::litterboxd_options o;
  o.binary = LB_LITTERBOXD_PATH;
  o.database_url = db.url();
  o.service_tokens = {"api-docs-test"};
  test::litterboxd_process server(std::move(o));
  const test::http_client http("127.0.0.1", server.port());
  const auto r = http.get("/openapi.json");
  EXPECT_EQ(r.status, 200) << r;
  const auto j = nlohmann::json::parse(r.body, nullptr, false);
  std::set<std::string> out;
  if (!j.is_object() || !j.contains("paths")) {
    ADD_FAILURE() << "no paths in /openapi.json: " << r.body;
    return out;
  }
  static const std::set<std::string> methods{"get", "post", "put", "patch", "delete"};
  for (const auto& [path, item] : j["paths"].items()) {
    for (const auto& [key, op] : item.items()) {
      if (methods.contains(key)) {
        out.insert(operation(key, path));
      }
    }
  }
  return out;
}

TEST(ApiDocs, TheOperationsTableListsEveryOperationThePageNames) {
  const auto doc = read_docs();
  ASSERT_FALSE(doc.empty()) << "cannot read " << LB_DOCS_DIR << "/api.md";
  const auto table = operations_table(doc);
  ASSERT_FALSE(table.empty()) << "docs/api.md has no \"## Operations\" table";
  for (const auto& op : operations_named(doc)) {
    EXPECT_TRUE(table.contains(op)) << op << " is named in docs/api.md but not in its table";
  }
}

TEST(ApiDocs, ServedOperationsAreExactlyThoseOfTheServedOpenApiDocument) {
  const auto table = operations_table(read_docs());
  std::set<std::string> documented;
  for (const auto& [op, status] : table) {
    if (status == "served") {
      documented.insert(op);
    }
  }
  const auto served = operations_served();
  ASSERT_FALSE(served.empty());
  for (const auto& op : served) {
    EXPECT_TRUE(documented.contains(op))
        << op << " is served but docs/api.md does not list it as served";
  }
  for (const auto& op : documented) {
    EXPECT_TRUE(served.contains(op))
        << op << " is listed as served in docs/api.md but /openapi.json lacks it";
  }
}

}  // namespace
}  // namespace litterbox
