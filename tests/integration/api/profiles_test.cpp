// The two wire profiles of API.md ("Wire profiles"): the litterbox shape at the root and
// drukbox's under /drukbox, served by one process over one database, field by field.
#include "tests/integration/api/api_fixture.hpp"

#include <algorithm>
#include <functional>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace litterbox::test::api {
namespace {

constexpr std::string_view k_unknown_id = "01890a5d-ac96-774b-bcce-b302099a8057";

/// drukbox's HostOut, in its order (API.md "Wire profiles").
const std::vector<std::string>& drukbox_fields() {
  static const std::vector<std::string> fields{"id",
                                               "name",
                                               "status",
                                               "provider",
                                               "image",
                                               "instance_type",
                                               "disk_gb",
                                               "external_ssh_host",
                                               "external_ssh_port",
                                               "ssh_username",
                                               "internal_ssh_host",
                                               "known_hosts",
                                               "tailscale_device_id",
                                               "private_key",
                                               "last_error",
                                               "created_at",
                                               "updated_at",
                                               "activated_at",
                                               "expires_at"};
  return fields;
}

std::vector<std::string> keys_of(const json& j) {
  std::vector<std::string> keys;
  if (j.is_object()) {
    for (const auto& item : j.items()) {
      keys.push_back(item.key());
    }
  }
  return keys;
}

/// The drukbox Host contract: exactly HostOut's fields in order, their JSON types, no
/// pulling_image, UUIDv7 id, name from id, RFC 3339 `Z` timestamps.
void expect_drukbox_host_shape(const json& host) {
  ASSERT_TRUE(host.is_object()) << host.dump();
  EXPECT_EQ(keys_of(host), drukbox_fields()) << "not drukbox's HostOut: " << host.dump();
  static const std::regex uuid_v7(
      "^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
  const auto is_string = [&](const char* k) { return host.contains(k) && host[k].is_string(); };
  const auto is_string_or_null = [&](const char* k) {
    return host.contains(k) && (host[k].is_string() || host[k].is_null());
  };
  const auto is_int = [&](const char* k) {
    return host.contains(k) && host[k].is_number_integer();
  };
  for (const char* k : {"id", "name", "status", "provider", "image", "external_ssh_host",
                        "ssh_username", "known_hosts", "last_error", "created_at", "updated_at"}) {
    EXPECT_TRUE(is_string(k)) << k << " must be a string: " << host.dump();
  }
  for (const char* k :
       {"instance_type", "internal_ssh_host", "private_key", "activated_at", "expires_at"}) {
    EXPECT_TRUE(is_string_or_null(k)) << k << " must be a string or null: " << host.dump();
  }
  EXPECT_TRUE(is_int("external_ssh_port")) << host.dump();
  EXPECT_TRUE(is_int("disk_gb") || (host.contains("disk_gb") && host["disk_gb"].is_null()))
      << host.dump();
  EXPECT_TRUE(host.contains("tailscale_device_id") && host["tailscale_device_id"].is_null())
      << host.dump();
  if (is_string("id")) {
    const auto id = host["id"].get<std::string>();
    EXPECT_TRUE(std::regex_match(id, uuid_v7)) << id;
    EXPECT_EQ(host.value("name", ""), "sb-" + id.substr(id.size() - 12));
  }
  static const std::set<std::string> statuses{"provisioning", "creating_vm", "bootstrapping",
                                              "active",       "deleting",    "error"};
  if (is_string("status")) {
    EXPECT_TRUE(statuses.contains(host["status"].get<std::string>()))
        << "not a drukbox status: " << host.dump();
  }
  for (const char* k : {"created_at", "updated_at", "activated_at", "expires_at"}) {
    if (is_string(k)) {
      EXPECT_TRUE(is_utc_timestamp(host[k].get<std::string>())) << k << ": " << host.dump();
    }
  }
  if (is_string("status") && host["status"] == "active" && is_int("external_ssh_port")) {
    const auto prefix = "[" + host.value("external_ssh_host", "") +
                        "]:" + std::to_string(host["external_ssh_port"].get<int>()) +
                        " ssh-ed25519 AAAA";
    EXPECT_TRUE(host.value("known_hosts", "").starts_with(prefix)) << host.dump();
    EXPECT_TRUE(is_string("activated_at")) << host.dump();
  }
}

/// One profile as a test parameter: where it is served and the shape of its Host.
struct profile_case {
  std::string name;
  std::string prefix;
  void (*expect_shape)(const json&);
  std::vector<std::string> doctor_keys;
};

void PrintTo(const profile_case& c, std::ostream* os) {
  *os << c.name;
}

class wire_profile_shapes : public api_test, public ::testing::WithParamInterface<profile_case> {
 protected:
  std::string at(std::string_view path) const { return GetParam().prefix + std::string(path); }
  void expect_shape(const json& host) const { GetParam().expect_shape(host); }
};

TEST_P(wire_profile_shapes, CreateGetListRenewAndDeleteAnswerInTheProfileShape) {
  const auto created = call("POST", at("/hosts"), R"({"env": {"TASK": "profiles"}})",
                            {{"Content-Type", "application/json"}});
  ASSERT_EQ(created.status, 201) << created;
  auto h = body_json(created);
  expect_shape(h);
  EXPECT_EQ(h.value("status", ""), "active") << h.dump();
  EXPECT_TRUE(h["private_key"].is_string()) << "the creating request gets the minted key";
  EXPECT_TRUE(created.header("X-Litterbox-Create-Path").has_value())
      << "API.md \"How a create was served\", in both profiles: " << created;
  const auto id = h.value("id", "");

  const auto got = get(at("/hosts/" + id));
  ASSERT_EQ(got.status, 200) << got;
  auto g = body_json(got);
  expect_shape(g);
  EXPECT_TRUE(g["private_key"].is_null()) << "only the 201 carries the key";
  EXPECT_EQ(g["known_hosts"], h["known_hosts"]);

  const auto listed = get(at("/hosts"));
  ASSERT_EQ(listed.status, 200) << listed;
  auto rows = body_json(listed);
  ASSERT_TRUE(rows.is_array()) << listed;
  bool found = false;
  for (auto& row : rows) {
    expect_shape(row);
    found = found || row.value("id", "") == id;
  }
  EXPECT_TRUE(found) << listed;

  const auto renewed = call("POST", at("/hosts/" + id + "/renew"), "{}");
  ASSERT_EQ(renewed.status, 200) << renewed;
  auto r = body_json(renewed);
  expect_shape(r);
  EXPECT_GT(parse_time(r["expires_at"]), parse_time(h["expires_at"])) << r.dump();

  const auto deleted = call("DELETE", at("/hosts/" + id));
  EXPECT_EQ(deleted.status, 204) << deleted;
  EXPECT_EQ(deleted.body, "") << deleted;
  expect_error(get(at("/hosts/" + id)), 404, "host not found", "NOT_FOUND");
  expect_error(call("DELETE", at("/hosts/" + id)), 404, "host not found", "NOT_FOUND");
}

TEST_P(wire_profile_shapes, RespondAsyncAnswers202InTheProfileShape) {
  const auto r = call("POST", at("/hosts"), "{}", {{"Prefer", "respond-async"}});
  ASSERT_EQ(r.status, 202) << r;
  expect_shape(body_json(r));
}

TEST_P(wire_profile_shapes, DoctorHasExactlyTheProfileKeys) {
  const auto r = get(at("/doctor"));
  ASSERT_EQ(r.status, 200) << r;
  auto j = body_json(r);
  EXPECT_EQ(keys_of(j), GetParam().doctor_keys) << r;
  EXPECT_TRUE(j["ok"].is_boolean()) << r;
  EXPECT_TRUE(j["active_provider"].is_string()) << r;
  ASSERT_TRUE(j["checks"].is_array() && j["checks"].size() >= 4U) << r;
  const bool drukbox = GetParam().prefix == "/drukbox";
  if (drukbox) {
    EXPECT_EQ(j["tailscale_enabled"], false) << r;
  }
  for (auto& c : j["checks"]) {
    EXPECT_EQ(keys_of(c),
              (std::vector<std::string>{"name", "status", "detail", "latency_ms", "hint"}))
        << c.dump();
    EXPECT_TRUE(c["name"].is_string() && c["detail"].is_string()) << c.dump();
    EXPECT_TRUE(c["status"] == "ok" || c["status"] == "fail") << c.dump();
    if (drukbox) {
      EXPECT_TRUE(c["latency_ms"].is_number_integer() || c["latency_ms"].is_null()) << c.dump();
      EXPECT_TRUE(c["hint"].is_null() || (c["hint"].is_string() && c["hint"] != ""))
          << "no hint is null in drukbox's shape: " << c.dump();
    } else {
      EXPECT_TRUE(c["latency_ms"].is_number()) << c.dump();
      EXPECT_TRUE(c["hint"].is_string()) << c.dump();
    }
  }
}

TEST_P(wire_profile_shapes, HealthzAnswersOkWithoutAuth) {
  const auto r = call("GET", at("/healthz"), {}, {}, false);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.body, R"({"status":"ok"})") << r;
}

INSTANTIATE_TEST_SUITE_P(
    profiles, wire_profile_shapes,
    ::testing::Values(
        profile_case{"litterbox", "", &expect_host_shape, {"ok", "active_provider", "checks"}},
        profile_case{"drukbox",
                     "/drukbox",
                     &expect_drukbox_host_shape,
                     {"ok", "active_provider", "tailscale_enabled", "checks"}}),
    [](const auto& p) { return p.param.name; });

/// One request sent to both profiles, with what API.md says it answers.
struct error_case {
  std::string name;
  std::string method;
  std::string path;  ///< without a profile prefix
  std::string body;
  std::vector<http_header> headers;
  bool auth = true;
  int status;
  std::string error_code;  ///< "" for the bodies without one (401, 403, 405, 422)
};

class profile_errors : public api_test {};

TEST_F(profile_errors, EveryErrorIsTheSameStatusAndBodyInBothProfiles) {
  const auto failed = create(R"({"image": "registry.test/fail-create:profiles"})");
  ASSERT_EQ(failed.status, 502) << failed;
  const auto errored = find_failed(body_json(failed).value("detail", ""));
  ASSERT_TRUE(errored.is_object());
  const auto errored_id = errored.value("id", "");
  const std::string unknown = "/hosts/" + std::string(k_unknown_id);
  const std::vector<error_case> cases{
      {"no token", "GET", "/hosts", "", {}, false, 401, ""},
      {"basic auth", "GET", "/doctor", "", {{"Authorization", "Basic YTpi"}}, false, 401, ""},
      {"unknown token", "GET", "/hosts", "", {bearer("not-a-token")}, false, 403, ""},
      {"unknown host", "GET", unknown, "", {}, true, 404, "NOT_FOUND"},
      {"delete unknown host", "DELETE", unknown, "", {}, true, 404, "NOT_FOUND"},
      {"renew unknown host", "POST", unknown + "/renew", "{}", {}, true, 404, "NOT_FOUND"},
      {"unknown route", "GET", "/nope", "", {}, true, 404, "NOT_FOUND"},
      {"wrong method", "PUT", "/hosts", "{}", {}, true, 405, ""},
      {"malformed id", "GET", "/hosts/not-a-uuid", "", {}, true, 422, ""},
      {"reserved env", "POST", "/hosts", R"({"env": {"LITTERBOX_X": "1"}})", {}, true, 422, ""},
      {"malformed json", "POST", "/hosts", "{", {}, true, 422, ""},
      {"bad idempotency key", "POST", "/hosts", "{}", {{"Idempotency-Key", "a b"}}, true, 422, ""},
      {"unknown instance type",
       "POST",
       "/hosts",
       R"({"instance_type": "huge"})",
       {},
       true,
       400,
       "BAD_REQUEST"},
      {"too large",
       "POST",
       "/hosts",
       std::string(2 * 1024 * 1024, ' '),
       {},
       true,
       413,
       "TOO_LARGE"},
      {"renew a host in error",
       "POST",
       "/hosts/" + errored_id + "/renew",
       "{}",
       {},
       true,
       409,
       "HOST_STATE"},
      {"provisioning fails",
       "POST",
       "/hosts",
       R"({"image": "registry.test/missing:profiles"})",
       {},
       true,
       502,
       "PROVISIONING_FAILED"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto root = call(c.method, c.path, c.body, c.headers, c.auth);
    const auto drukbox = call(c.method, "/drukbox" + c.path, c.body, c.headers, c.auth);
    EXPECT_EQ(root.status, c.status) << root;
    EXPECT_EQ(drukbox.status, c.status) << drukbox;
    auto a = body_json(root);
    auto b = body_json(drukbox);
    ASSERT_TRUE(a.is_object() && a.contains("detail")) << root;
    EXPECT_EQ(a.value("error_code", ""), c.error_code) << root;
    if (c.status == 502) {
      // Each create fails on its own host; the detail names the same kind of failure.
      EXPECT_EQ(keys_of(a), keys_of(b)) << drukbox;
      EXPECT_EQ(a.value("error_code", ""), b.value("error_code", "")) << drukbox;
      EXPECT_TRUE(b.value("detail", "").starts_with("ImageNotFound: ")) << drukbox;
    } else {
      EXPECT_EQ(a, b) << "same error in both profiles:\n" << root << '\n' << drukbox;
    }
    EXPECT_EQ(root.header("Allow"), drukbox.header("Allow"));
    EXPECT_EQ(root.header("Content-Type"), drukbox.header("Content-Type"));
  }
}

class drukbox_profile : public api_test {};

TEST_F(drukbox_profile, OneHostLooksTheSameThroughBothProfilesExceptForTheFieldsLeftOut) {
  const auto h = create_active(R"({"instance_type": "medium"})");
  const auto id = h.value("id", "");
  auto litterbox = body_json(get("/hosts/" + id));
  auto drukbox = body_json(get("/drukbox/hosts/" + id));
  expect_host_shape(litterbox);
  expect_drukbox_host_shape(drukbox);
  for (const auto& [key, value] : drukbox.items()) {
    EXPECT_EQ(value, litterbox.value(key, json())) << key;
  }
  EXPECT_EQ(drukbox["instance_type"], "medium");
  EXPECT_EQ(drukbox["disk_gb"], 20);
  EXPECT_EQ(drukbox["external_ssh_port"], litterbox["ssh_port"]);

  // And a host created through drukbox is a litterbox host at the root.
  const auto made = call("POST", "/drukbox/hosts", "{}");
  ASSERT_EQ(made.status, 201) << made;
  const auto root = get("/hosts/" + body_json(made).value("id", ""));
  ASSERT_EQ(root.status, 200) << root;
  expect_host_shape(body_json(root));
}

TEST_F(drukbox_profile, AnIdempotencyKeyIsTheSameKeyInBothProfiles) {
  const std::vector<http_header> key{{"Idempotency-Key", "profiles-shared-key"}};
  const auto first = create("{}", key);
  ASSERT_EQ(first.status, 201) << first;
  const auto count = list_all().size();
  const auto replay = call("POST", "/drukbox/hosts", "{}", key);
  ASSERT_EQ(replay.status, 201) << replay;
  auto h = body_json(replay);
  expect_drukbox_host_shape(h);
  EXPECT_EQ(h["id"], body_json(first)["id"]) << "the same host, never a second VM";
  EXPECT_TRUE(h["private_key"].is_null()) << "a replay carries no key";
  EXPECT_EQ(list_all().size(), count);
}

TEST_F(drukbox_profile, TheNextLinkOfAListStaysInTheDrukboxProfile) {
  create_active("{}");
  create_active("{}");
  const auto r = get("/drukbox/hosts?limit=1&status=active");
  ASSERT_EQ(r.status, 200) << r;
  const auto link = r.header("Link");
  ASSERT_TRUE(link.has_value()) << r;
  const auto open = link->find('<');
  const auto close = link->find('>');
  ASSERT_TRUE(open != std::string::npos && close != std::string::npos) << *link;
  const auto next = link->substr(open + 1, close - open - 1);
  EXPECT_TRUE(next.starts_with("/drukbox/hosts?")) << *link;
  EXPECT_NE(next.find("status=active"), std::string::npos) << *link;
  const auto page = get(next);
  ASSERT_EQ(page.status, 200) << page;
  auto rows = body_json(page);
  ASSERT_TRUE(rows.is_array() && rows.size() == 1U) << page;
  expect_drukbox_host_shape(rows[0]);
  EXPECT_NE(rows[0]["id"], body_json(r)[0]["id"]);
}

TEST_F(drukbox_profile, ConsoleMetricsAndThePrefixAloneAreNotDrukboxRoutes) {
  const auto id = create_active("{}").value("id", "");
  for (const auto& target :
       {"/drukbox/hosts/" + id + "/console", std::string("/drukbox/metrics"),
        std::string("/drukbox"), std::string("/drukbox/"), std::string("/drukbox/drukbox/hosts")}) {
    expect_error(get(target), 404, "Not Found", "NOT_FOUND");
  }
  EXPECT_EQ(get("/hosts/" + id + "/console").status, 200) << "the litterbox profile keeps it";
}

TEST_F(drukbox_profile, WrongMethodAllowsOnlyTheMethodsOfTheProfile) {
  const auto r = call("PATCH", "/drukbox/hosts/" + std::string(k_unknown_id), "{}");
  EXPECT_EQ(r.status, 405) << r;
  EXPECT_EQ(r.header("Allow").value_or(""), "GET, DELETE") << r;
}

/// The (METHOD, path) pairs of an OpenAPI document.
std::set<std::string> operations_of(const json& doc) {
  static const std::set<std::string> verbs{"get",     "put",  "post",  "delete",
                                           "options", "head", "patch", "trace"};
  std::set<std::string> out;
  if (!doc.is_object() || !doc.contains("paths")) {
    return out;
  }
  for (const auto& [path, item] : doc["paths"].items()) {
    for (const auto& [key, op] : item.items()) {
      if (verbs.contains(key)) {
        std::string method = key;
        for (auto& c : method) {
          c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        }
        out.insert(method + " " + path);
      }
    }
  }
  return out;
}

TEST_F(drukbox_profile, OpenApiListsExactlyDrukboxOperationsAndEachIsServed) {
  const auto r = call("GET", "/drukbox/openapi.json", {}, {}, false);
  ASSERT_EQ(r.status, 200) << r;
  auto doc = body_json(r);
  EXPECT_TRUE(doc.value("openapi", "").starts_with("3.")) << r;
  // API.md "Wire profiles": drukbox's ten operations.
  const std::set<std::string> drukbox{"POST /hosts",
                                      "GET /hosts",
                                      "GET /hosts/{host_id}",
                                      "DELETE /hosts/{host_id}",
                                      "POST /hosts/{host_id}/renew",
                                      "GET /doctor",
                                      "POST /http-proxies",
                                      "DELETE /http-proxies/{name}",
                                      "POST /http-proxies/{name}/hosts/{host_id}",
                                      "DELETE /http-proxies/{name}/hosts/{host_id}"};
  const auto listed = operations_of(doc);
  EXPECT_EQ(listed, drukbox);
  ASSERT_TRUE(doc.contains("servers") && doc["servers"].is_array()) << r;
  EXPECT_EQ(doc["servers"][0].value("url", ""), "/drukbox");
  const auto& host = doc["components"]["schemas"]["Host"];
  EXPECT_EQ(host.value("required", json()), json(drukbox_fields()));
  for (const auto& op : listed) {
    const auto space = op.find(' ');
    auto target = "/drukbox" + op.substr(space + 1);
    if (const auto p = target.find("{host_id}"); p != std::string::npos) {
      target.replace(p, 9, k_unknown_id);
    }
    if (const auto p = target.find("{name}"); p != std::string::npos) {
      target.replace(p, 6, "no-such-proxy");
    }
    const auto resp = call(op.substr(0, space), target, op.starts_with("POST") ? "{}" : "");
    EXPECT_NE(resp.status, 405) << op << '\n' << resp;
    if (resp.status == 404) {
      // Served, not an unknown route: the 404 names what was not found.
      const std::set<std::string> known{"host not found", "http proxy not found",
                                        "http proxy not attached"};
      EXPECT_TRUE(known.contains(body_json(resp).value("detail", ""))) << op << '\n' << resp;
    }
  }
  // The litterbox document is untouched by the profile: it still lists its own operations.
  auto root = body_json(call("GET", "/openapi.json", {}, {}, false));
  EXPECT_TRUE(operations_of(root).contains("GET /hosts/{host_id}/console"));
  EXPECT_FALSE(root.contains("servers"));
  EXPECT_FALSE(root.contains("x-profiles"));
}

// --- The two SDKs, as they read what the server sends (their sources are public; neither is
// vendored: these helpers read the same fields the same way).

/// A field of a Python dataclass and the JSON its annotation admits.
struct dataclass_field {
  std::string name;
  enum { str, integer, boolean, list, optional_str, optional_int } type;
};

/// `cls(**data)` for a dataclass whose fields have no defaults, as Python binds it: every
/// field must be given and nothing else may be. Returns the TypeError Python would raise, or
/// "" when it binds; a value whose JSON type does not fit the annotation is reported too.
std::string construct(std::string_view cls, const std::vector<dataclass_field>& fields,
                      const json& data) {
  if (!data.is_object()) {
    return std::string(cls) + "(**data): argument after ** must be a mapping";
  }
  for (const auto& [key, value] : data.items()) {
    const auto known = std::any_of(fields.begin(), fields.end(),
                                   [&key](const dataclass_field& f) { return f.name == key; });
    if (!known) {
      return std::string(cls) + ".__init__() got an unexpected keyword argument '" + key + "'";
    }
  }
  for (const auto& f : fields) {
    if (!data.contains(f.name)) {
      return std::string(cls) + ".__init__() missing 1 required positional argument: '" + f.name +
             "'";
    }
    const auto& v = data[f.name];
    bool fits = false;
    switch (f.type) {
      case dataclass_field::str:
        fits = v.is_string();
        break;
      case dataclass_field::integer:
        fits = v.is_number_integer();
        break;
      case dataclass_field::boolean:
        fits = v.is_boolean();
        break;
      case dataclass_field::list:
        fits = v.is_array();
        break;
      case dataclass_field::optional_str:
        fits = v.is_string() || v.is_null();
        break;
      case dataclass_field::optional_int:
        fits = v.is_number_integer() || v.is_null();
        break;
    }
    if (!fits) {
      return std::string(cls) + "." + f.name + " does not match its annotation: " + v.dump();
    }
  }
  return "";
}

/// drukbox_sdk.SandboxHost: drukbox's HostOut, built with SandboxHost(**data).
std::string sandbox_host(const json& data) {
  using f = dataclass_field;
  static const std::vector<f> fields{
      {"id", f::str},
      {"name", f::str},
      {"status", f::str},
      {"provider", f::str},
      {"image", f::str},
      {"instance_type", f::optional_str},
      {"disk_gb", f::optional_int},
      {"external_ssh_host", f::str},
      {"external_ssh_port", f::integer},
      {"ssh_username", f::str},
      {"internal_ssh_host", f::optional_str},
      {"known_hosts", f::str},
      {"tailscale_device_id", f::optional_str},
      {"private_key", f::optional_str},
      {"last_error", f::str},
      {"created_at", f::str},
      {"updated_at", f::str},
      {"activated_at", f::optional_str},
      {"expires_at", f::optional_str},
  };
  return construct("SandboxHost", fields, data);
}

/// drukbox_sdk's doctor report: DoctorReport(**data) with DoctorCheck(**c) for each check.
std::string doctor_report(const json& data) {
  using f = dataclass_field;
  static const std::vector<f> report{{"ok", f::boolean},
                                     {"active_provider", f::str},
                                     {"tailscale_enabled", f::boolean},
                                     {"checks", f::list}};
  static const std::vector<f> check{{"name", f::str},
                                    {"status", f::str},
                                    {"detail", f::optional_str},
                                    {"latency_ms", f::optional_int},
                                    {"hint", f::optional_str}};
  if (auto e = construct("DoctorReport", report, data); !e.empty()) {
    return e;
  }
  for (const auto& c : data["checks"]) {
    if (auto e = construct("DoctorCheck", check, c); !e.empty()) {
      return e;
    }
  }
  return "";
}

/// drukbox_sdk.SandboxAPI pointed at `base_url` (a path on the test server): the calls and the
/// status handling of the SDK, each answer built the way the SDK builds it.
class drukbox_sdk {
 public:
  using transport =
      std::function<http_response(std::string, std::string, std::string, std::vector<http_header>)>;

  drukbox_sdk(std::string base_url, transport send)
      : base_(std::move(base_url)), send_(std::move(send)) {}

  /// SandboxHost(**data) of a 2xx answer; a failure names the SDK exception.
  json host_call(const std::string& method, const std::string& path, const json& payload,
                 std::vector<http_header> headers = {}) const {
    headers.emplace_back("Accept", "application/json");
    headers.emplace_back("Content-Type", "application/json");
    const auto r = send_(method, base_ + path, payload.is_null() ? "" : payload.dump(), headers);
    if (!ok(r)) {
      return json(nullptr);
    }
    const auto data = json::parse(r.body, nullptr, false);
    const auto e = sandbox_host(data);
    EXPECT_EQ(e, "") << method << ' ' << base_ << path << " -> TypeError\n" << r;
    return e.empty() ? data : json(nullptr);
  }

  json create_host(const json& payload, const std::string& idempotency_key) const {
    return host_call("POST", "/hosts", payload, {{"Idempotency-Key", idempotency_key}});
  }
  json get_host(const std::string& id) const { return host_call("GET", "/hosts/" + id, nullptr); }
  json attach(const std::string& id) const { return get_host(id); }
  json renew_host(const std::string& id) const {
    return host_call("POST", "/hosts/" + id + "/renew", json::object());
  }

  std::vector<json> list_hosts() const {
    const auto r = send_("GET", base_ + "/hosts", "", {{"Accept", "application/json"}});
    std::vector<json> out;
    if (!ok(r)) {
      return out;
    }
    const auto data = json::parse(r.body, nullptr, false);
    EXPECT_TRUE(data.is_array()) << r;
    for (const auto& item : data) {
      const auto e = sandbox_host(item);
      EXPECT_EQ(e, "") << "list_hosts -> TypeError\n" << r;
      out.push_back(item);
    }
    return out;
  }

  json doctor() const {
    const auto r = send_("GET", base_ + "/doctor", "", {{"Accept", "application/json"}});
    if (!ok(r)) {
      return json(nullptr);
    }
    const auto data = json::parse(r.body, nullptr, false);
    const auto e = doctor_report(data);
    EXPECT_EQ(e, "") << "doctor -> TypeError\n" << r;
    return data;
  }

  /// 204 → {} as the SDK returns it; true on success.
  bool delete_host(const std::string& id) const {
    const auto r = send_("DELETE", base_ + "/hosts/" + id, "", {{"Accept", "application/json"}});
    return ok(r);
  }

  /// The SDK exception a status maps to ("" for success), with the detail it carries.
  static std::string exception_of(const http_response& r) {
    if (r.status >= 200 && r.status < 300) {
      return "";
    }
    const auto j = json::parse(r.body, nullptr, false);
    // Every error body is a JSON object: the SDK reads .get("detail").
    const std::string detail = j.is_object() && j.contains("detail") ? j["detail"].dump() : "?";
    switch (r.status) {
      case 401:
      case 403:
        return "SandboxAuthError(" + detail + ")";
      case 404:
        return "SandboxNotFoundError(" + detail + ")";
      case 409:
        return "SandboxConflictError(" + detail + ")";
      case 502:
        return "SandboxProvisioningError(" + detail + ")";
      case 503:
        return "SandboxUnavailableError(" + detail + ")";
      default:
        return "SandboxResponseError(" + detail + ")";
    }
  }

  /// The SDK exception the last call raised ("" when it succeeded).
  mutable std::string last_exception;

 private:
  bool ok(const http_response& r) const {
    last_exception = exception_of(r);
    if (r.status == 204) {
      return true;
    }
    if (!last_exception.empty()) {
      return false;
    }
    const auto j = json::parse(r.body, nullptr, false);
    if (j.is_discarded()) {
      last_exception = "SandboxResponseError(non-JSON output)";
      return false;
    }
    return true;
  }

  std::string base_;
  transport send_;
};

/// litterbox_sdk's host: reads id, status, ssh_host, ssh_port and known_hosts and ignores every
/// other field. Returns what is missing or mistyped, "" when it reads.
std::string litterbox_sdk_host(const json& data) {
  if (!data.is_object()) {
    return "not an object";
  }
  for (const char* k : {"id", "status", "ssh_host", "known_hosts"}) {
    if (!data.contains(k) || !data[k].is_string()) {
      return std::string("KeyError/TypeError: ") + k;
    }
  }
  if (!data.contains("ssh_port") || !data["ssh_port"].is_number_integer()) {
    return "KeyError/TypeError: ssh_port";
  }
  return "";
}

class sdk_clients : public api_test {
 protected:
  drukbox_sdk sdk(std::string base_url) const {
    return drukbox_sdk(
        std::move(base_url), [this](std::string method, std::string target, std::string body,
                                    std::vector<http_header> headers) {
          return call(std::move(method), std::move(target), std::move(body), std::move(headers));
        });
  }
};

TEST_F(sdk_clients, DrukboxSdkCallsAllWorkPointedAtTheDrukboxBaseUrl) {
  const auto api = sdk("/drukbox");
  auto created = api.create_host(
      json{{"env", {{"AGENT", "sdk"}}}, {"expires_at", "2099-01-01T00:00:00+00:00"}},
      "drukbox-sdk-run-1");
  ASSERT_TRUE(created.is_object()) << api.last_exception;
  EXPECT_EQ(created["status"], "active");
  EXPECT_TRUE(created["private_key"].is_string());
  const auto id = created["id"].get<std::string>();

  auto again = api.create_host(
      json{{"env", {{"AGENT", "sdk"}}}, {"expires_at", "2099-01-01T00:00:00+00:00"}},
      "drukbox-sdk-run-1");
  ASSERT_TRUE(again.is_object()) << api.last_exception;
  EXPECT_EQ(again["id"], id) << "a retry with the same key is the same host";

  auto got = api.get_host(id);
  ASSERT_TRUE(got.is_object()) << api.last_exception;
  EXPECT_EQ(got["known_hosts"], created["known_hosts"]);
  ASSERT_TRUE(api.attach(id).is_object()) << api.last_exception;

  bool listed = false;
  for (auto& h : api.list_hosts()) {
    listed = listed || h["id"] == id;
  }
  EXPECT_TRUE(listed);

  auto renewed = api.renew_host(id);
  ASSERT_TRUE(renewed.is_object()) << api.last_exception;
  EXPECT_TRUE(renewed["expires_at"].is_string());

  auto report = api.doctor();
  ASSERT_TRUE(report.is_object()) << api.last_exception;
  EXPECT_EQ(report["tailscale_enabled"], false);

  EXPECT_TRUE(api.delete_host(id)) << api.last_exception;
  EXPECT_FALSE(api.get_host(id).is_object());
  EXPECT_EQ(api.last_exception, R"(SandboxNotFoundError("host not found"))");
  EXPECT_FALSE(api.delete_host(id));
  EXPECT_EQ(api.last_exception, R"(SandboxNotFoundError("host not found"))");

  auto failed = api.create_host(json{{"image", "registry.test/fail-boot:sdk"}}, "sdk-fail");
  EXPECT_FALSE(failed.is_object());
  EXPECT_TRUE(api.last_exception.starts_with(R"(SandboxProvisioningError("BootTimeout: )"))
      << api.last_exception;
}

TEST_F(sdk_clients, TheDrukboxSdkPointedAtTheRootFailsAsTheIssueReports) {
  // What the drukbox profile is for: the litterbox shape breaks SandboxHost(**data).
  const auto r = create("{}");
  ASSERT_EQ(r.status, 201) << r;
  EXPECT_EQ(sandbox_host(body_json(r)),
            "SandboxHost.__init__() got an unexpected keyword argument 'image_digest'");
}

TEST_F(sdk_clients, BothSdksWorkAgainstOneServerAtTheSameTime) {
  const auto drukbox = sdk("/drukbox");
  // The Litterbox SDK creates at the root, the drukbox SDK under /drukbox, on one server.
  const auto lr = create("{}", {{"Idempotency-Key", "litterbox-sdk-both"}});
  ASSERT_EQ(lr.status, 201) << lr;
  auto lh = body_json(lr);
  EXPECT_EQ(litterbox_sdk_host(lh), "");
  auto dh = drukbox.create_host(json::object(), "drukbox-sdk-both");
  ASSERT_TRUE(dh.is_object()) << drukbox.last_exception;

  // Each sees the other's host in its own shape.
  auto seen = drukbox.get_host(lh["id"].get<std::string>());
  ASSERT_TRUE(seen.is_object()) << drukbox.last_exception;
  EXPECT_EQ(seen["external_ssh_port"], lh["ssh_port"]);
  const auto from_root = get("/hosts/" + dh["id"].get<std::string>());
  ASSERT_EQ(from_root.status, 200) << from_root;
  EXPECT_EQ(litterbox_sdk_host(body_json(from_root)), "");
  EXPECT_EQ(body_json(from_root)["ssh_port"], dh["external_ssh_port"]);

  std::set<std::string> drukbox_ids;
  for (auto& h : drukbox.list_hosts()) {
    drukbox_ids.insert(h["id"].get<std::string>());
  }
  std::set<std::string> litterbox_ids;
  for (auto& h : list_all()) {
    EXPECT_EQ(litterbox_sdk_host(h), "") << h.dump();
    litterbox_ids.insert(h["id"].get<std::string>());
  }
  EXPECT_EQ(drukbox_ids, litterbox_ids) << "one service, one set of hosts";

  // Each deletes the other's host.
  EXPECT_TRUE(drukbox.delete_host(lh["id"].get<std::string>())) << drukbox.last_exception;
  EXPECT_EQ(call("DELETE", "/hosts/" + dh["id"].get<std::string>()).status, 204);
  EXPECT_EQ(get("/hosts/" + lh["id"].get<std::string>()).status, 404);
  EXPECT_FALSE(drukbox.get_host(dh["id"].get<std::string>()).is_object());
}

// A server whose image pulls take long enough that a host is seen in pulling_image.
class drukbox_slow_pull : public api_test {
 protected:
  static void SetUpTestSuite() {
    auto args = default_args();
    set_arg(args, "--provision-timeout", "60");
    set_arg(args, "--fake-pull-delay-ms", "5000");
    start_server(std::move(args));
  }
};

bool has_host(const json& rows, const std::string& id, std::string_view status) {
  return rows.is_array() && std::any_of(rows.begin(), rows.end(), [&](const json& h) {
           return h.value("id", "") == id && h.value("status", "") == status;
         });
}

TEST_F(drukbox_slow_pull, PullingImageIsReportedAsProvisioningAndFilteredAsSuch) {
  const auto r = create("{}", {{"Prefer", "respond-async"}});
  ASSERT_EQ(r.status, 202) << r;
  auto id = body_json(r).value("id", "");
  const auto pulling = poll_host(id, [](const json& h) {
    return h.value("status", "") == "pulling_image" || h.value("status", "") == "active" ||
           h.value("status", "") == "error";
  });
  ASSERT_EQ(pulling.value("status", ""), "pulling_image") << pulling.dump();

  // Read through drukbox, then make sure the host was still pulling afterwards (statuses only
  // move forward), so what drukbox showed was a pulling_image host.
  const auto one = get("/drukbox/hosts/" + id);
  const auto filtered = get("/drukbox/hosts?status=provisioning");
  const auto by_name = get("/drukbox/hosts?status=pulling_image");
  const auto root_filtered = get("/hosts?status=provisioning");
  auto after = body_json(get("/hosts/" + id));
  ASSERT_EQ(after.value("status", ""), "pulling_image")
      << "the pull ended before the checks; raise --fake-pull-delay-ms";

  ASSERT_EQ(one.status, 200) << one;
  auto h = body_json(one);
  expect_drukbox_host_shape(h);
  EXPECT_EQ(h["status"], "provisioning") << h.dump();
  EXPECT_TRUE(has_host(body_json(filtered), id, "provisioning"))
      << "a drukbox filter returns what drukbox shows: " << filtered;
  EXPECT_TRUE(has_host(body_json(by_name), id, "provisioning"))
      << "query parameters are the same in both profiles: " << by_name;
  EXPECT_FALSE(has_host(body_json(root_filtered), id, "pulling_image")) << root_filtered;
  EXPECT_FALSE(has_host(body_json(root_filtered), id, "provisioning")) << root_filtered;
}

}  // namespace
}  // namespace litterbox::test::api
