#include "tests/integration/api/api_fixture.hpp"

#include "base/time.hpp"
#include "tests/support/pg_database.hpp"

#include <cstdlib>
#include <regex>
#include <stdexcept>
#include <thread>

#ifndef LB_LITTERBOXD_PATH
#define LB_LITTERBOXD_PATH ""
#endif

namespace litterbox::test::api {
namespace {

// Polling interval for GET /hosts/{id}; the wait itself is bounded by a deadline.
constexpr auto k_poll_interval = std::chrono::milliseconds(20);
// Enough server log to see the last requests before a failure.
constexpr std::size_t k_output_tail_bytes = 3000;

std::filesystem::path litterboxd_binary() {
  if (const char* env = std::getenv("LITTERBOXD"); env != nullptr && *env != '\0') {
    return env;
  }
  return LB_LITTERBOXD_PATH;
}

/// `litterboxd serve` on `database_url` with both tokens, these flags and this environment.
litterboxd_options server_options(std::string database_url, std::vector<std::string> args,
                                  std::vector<std::pair<std::string, std::string>> env) {
  litterboxd_options o;
  o.binary = litterboxd_binary();
  o.database_url = std::move(database_url);
  o.service_tokens = {std::string(k_token), std::string(k_token2)};
  o.args = std::move(args);
  o.env = std::move(env);
  return o;
}

}  // namespace

struct server_state {
  std::unique_ptr<test_database> db;
  std::string database_url;
  std::unique_ptr<litterboxd_process> process;
  std::unique_ptr<http_client> client;
};

std::unique_ptr<server_state> api_test::state_;
std::string api_test::start_error_;

const std::vector<std::string>& host_fields() {
  static const std::vector<std::string> fields{"id",
                                               "name",
                                               "status",
                                               "provider",
                                               "image",
                                               "image_digest",
                                               "instance_type",
                                               "cpus",
                                               "memory_mib",
                                               "disk_gb",
                                               "ssh_host",
                                               "ssh_port",
                                               "external_ssh_host",
                                               "external_ssh_port",
                                               "internal_ssh_host",
                                               "ssh_username",
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

std::vector<std::string> default_args() {
  return {
      "--lease-default-ttl", std::to_string(k_lease_seconds),
      "--provision-timeout", std::to_string(k_provision_timeout_s),
      "--instance-types",    "small=1:1024,medium=2:2048:20",
      "--max-cpus",          std::to_string(k_max_cpus),
      "--max-memory-mib",    std::to_string(k_max_memory_mib),
      "--max-disk-gb",       std::to_string(k_max_disk_gb),
      "--ssh-ports",         std::to_string(k_ssh_port_min) + "-" + std::to_string(k_ssh_port_max)};
}

void set_arg(std::vector<std::string>& args, std::string_view flag, std::string value) {
  for (std::size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == flag) {
      args[i + 1] = std::move(value);
      return;
    }
  }
  args.emplace_back(flag);
  args.push_back(std::move(value));
}

http_header bearer(std::string_view token) {
  return {"Authorization", "Bearer " + std::string(token)};
}

json body_json(const http_response& r) {
  auto j = json::parse(r.body, nullptr, false);
  if (j.is_discarded()) {
    ADD_FAILURE() << "response body is not JSON:\n" << r;
    return json(nullptr);
  }
  return j;
}

bool is_utc_timestamp(std::string_view text) {
  static const std::regex re(R"(^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$)");
  return std::regex_match(text.begin(), text.end(), re);
}

std::chrono::sys_time<std::chrono::microseconds> parse_time(const json& value) {
  if (!value.is_string()) {
    ADD_FAILURE() << "not a timestamp: " << value.dump();
    return {};
  }
  const auto t = parse_rfc3339(value.get<std::string>());
  if (!t) {
    ADD_FAILURE() << "not an RFC 3339 timestamp: " << value.dump();
    return {};
  }
  return *t;
}

void expect_host_shape(const json& host) {
  ASSERT_TRUE(host.is_object()) << host.dump();
  std::vector<std::string> keys;
  for (const auto& item : host.items()) {
    keys.push_back(item.key());
  }
  EXPECT_EQ(keys, host_fields()) << "Host fields (in order) differ from API.md: " << host.dump();
  EXPECT_FALSE(host.contains("env")) << "env is write-only";

  static const std::regex uuid_v7(
      "^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
  ASSERT_TRUE(host.contains("id") && host["id"].is_string()) << host.dump();
  const auto id = host["id"].get<std::string>();
  EXPECT_TRUE(std::regex_match(id, uuid_v7)) << "id is not a lowercase UUIDv7: " << id;
  ASSERT_TRUE(host.contains("name") && host["name"].is_string()) << host.dump();
  EXPECT_EQ(host["name"].get<std::string>(), "sb-" + id.substr(id.size() - 12));

  auto is_string = [&](const char* k) { return host.contains(k) && host[k].is_string(); };
  auto is_string_or_null = [&](const char* k) {
    return host.contains(k) && (host[k].is_string() || host[k].is_null());
  };
  auto is_int = [&](const char* k) { return host.contains(k) && host[k].is_number_integer(); };
  for (const char* k : {"status", "provider", "image", "ssh_host", "external_ssh_host",
                        "ssh_username", "known_hosts", "last_error", "created_at", "updated_at"}) {
    EXPECT_TRUE(is_string(k)) << k << " must be a string: " << host.dump();
  }
  for (const char* k : {"image_digest", "instance_type", "internal_ssh_host", "private_key",
                        "activated_at", "expires_at"}) {
    EXPECT_TRUE(is_string_or_null(k)) << k << " must be a string or null: " << host.dump();
  }
  for (const char* k : {"cpus", "memory_mib", "ssh_port", "external_ssh_port"}) {
    EXPECT_TRUE(is_int(k)) << k << " must be an integer: " << host.dump();
  }
  EXPECT_TRUE(is_int("disk_gb") || (host.contains("disk_gb") && host["disk_gb"].is_null()))
      << "disk_gb must be an integer or null: " << host.dump();
  EXPECT_TRUE(host.contains("tailscale_device_id") && host["tailscale_device_id"].is_null())
      << host.dump();

  static const std::vector<std::string> statuses{"provisioning",  "pulling_image", "creating_vm",
                                                 "bootstrapping", "active",        "deleting",
                                                 "error"};
  if (is_string("status")) {
    EXPECT_NE(std::find(statuses.begin(), statuses.end(), host["status"].get<std::string>()),
              statuses.end())
        << host.dump();
  }
  if (is_string("ssh_host") && is_string("external_ssh_host")) {
    EXPECT_EQ(host["ssh_host"], host["external_ssh_host"]);
  }
  if (is_int("ssh_port") && is_int("external_ssh_port")) {
    EXPECT_EQ(host["ssh_port"], host["external_ssh_port"]);
  }
  for (const char* k : {"created_at", "updated_at", "activated_at", "expires_at"}) {
    if (is_string(k)) {
      EXPECT_TRUE(is_utc_timestamp(host[k].get<std::string>()))
          << k << " is not RFC 3339 UTC with Z: " << host[k];
    }
  }
  if (is_string("status") && host["status"] == "active") {
    EXPECT_TRUE(is_string("activated_at")) << host.dump();
    EXPECT_EQ(host["last_error"], "") << host.dump();
    EXPECT_TRUE(is_string("image_digest") &&
                host["image_digest"].get<std::string>().starts_with("sha256:"))
        << host.dump();
    if (is_int("ssh_port") && is_string("ssh_host") && is_string("known_hosts")) {
      const auto port = host["ssh_port"].get<int>();
      EXPECT_GE(port, k_ssh_port_min);
      EXPECT_LE(port, k_ssh_port_max);
      const auto prefix = "[" + host["ssh_host"].get<std::string>() + "]:" + std::to_string(port) +
                          " ssh-ed25519 AAAA";
      EXPECT_TRUE(host["known_hosts"].get<std::string>().starts_with(prefix))
          << "known_hosts must pin [host]:port with an ed25519 key: " << host["known_hosts"];
    }
  }
  if (is_string("status") && host["status"] == "error") {
    EXPECT_NE(host["last_error"], "") << host.dump();
  }
}

void expect_error(const http_response& r, int status, std::string_view detail,
                  std::string_view error_code) {
  EXPECT_EQ(r.status, status) << r;
  const auto j = body_json(r);
  ASSERT_TRUE(j.is_object()) << r;
  EXPECT_EQ(j.value("detail", json()), json(detail)) << r;
  EXPECT_EQ(j.value("error_code", json()), json(error_code)) << r;
  EXPECT_EQ(r.header("Content-Type").value_or("").substr(0, 16), "application/json") << r;
}

json expect_validation(const http_response& r, const std::vector<std::string>& loc) {
  EXPECT_EQ(r.status, 422) << r;
  const auto j = body_json(r);
  if (!j.is_object() || !j.contains("detail") || !j["detail"].is_array() || j["detail"].empty()) {
    ADD_FAILURE() << "422 body must be {\"detail\": [ … ]}:\n" << r;
    return json(nullptr);
  }
  json found(nullptr);
  for (const auto& item : j["detail"]) {
    EXPECT_TRUE(item.is_object() && item.contains("type") && item["type"].is_string() &&
                item.contains("loc") && item["loc"].is_array() && item.contains("msg") &&
                item["msg"].is_string())
        << "each 422 item is {type, loc, msg}: " << item.dump();
    if (item.is_object() && item.value("loc", json()) == json(loc) && found.is_null()) {
      found = item;
    }
  }
  if (found.is_null()) {
    ADD_FAILURE() << "no 422 item with loc " << json(loc).dump() << ":\n" << r;
  }
  return found;
}

void api_test::start_server(std::vector<std::string> args,
                            std::vector<std::pair<std::string, std::string>> env) {
  start_error_.clear();
  try {
    auto s = std::make_unique<server_state>();
    s->db = std::make_unique<test_database>();
    s->database_url = s->db->url();
    state_ = std::move(s);
    start_server_on(state_->database_url, std::move(args), std::move(env));
  } catch (const std::exception& e) {
    start_error_ = e.what();
  }
}

void api_test::start_server_on(std::string url, std::vector<std::string> args,
                               std::vector<std::pair<std::string, std::string>> env) {
  if (!state_) {
    state_ = std::make_unique<server_state>();
  }
  state_->client.reset();
  state_->process.reset();
  state_->database_url = url;
  state_->process = std::make_unique<litterboxd_process>(
      server_options(std::move(url), std::move(args), std::move(env)));
  state_->client = std::make_unique<http_client>("127.0.0.1", state_->process->port());
}

std::unique_ptr<litterboxd_process> api_test::start_replica(
    std::vector<std::string> args, std::vector<std::pair<std::string, std::string>> env) {
  return std::make_unique<litterboxd_process>(
      server_options(database_url(), std::move(args), std::move(env)));
}

void api_test::TearDownTestSuite() {
  if (state_) {
    state_->client.reset();
    state_->process.reset();
  }
  state_.reset();
}

void api_test::SetUp() {
  ASSERT_TRUE(start_error_.empty()) << "server did not start: " << start_error_;
  ASSERT_TRUE(state_ && state_->process && state_->client);
  ASSERT_TRUE(state_->process->running())
      << "litterboxd is not running (" << state_->process->state()
      << "; an earlier test of this suite may have crashed it); output:\n"
      << state_->process->output_tail(k_output_tail_bytes);
}

void api_test::TearDown() {
  if (HasFailure() && state_ && state_->process) {
    std::cerr << "---- litterboxd (" << state_->process->state() << ") output, tail ----\n"
              << state_->process->output_tail(k_output_tail_bytes) << "\n---- end ----\n";
  }
}

const http_client& api_test::client() {
  return *state_->client;
}
litterboxd_process& api_test::process() {
  return *state_->process;
}
std::string api_test::database_url() {
  return state_->database_url;
}

http_response api_test::call(std::string method, std::string target, std::string body,
                             std::vector<http_header> headers, bool auth) const {
  if (auth) {
    headers.insert(headers.begin(), bearer());
  }
  auto r =
      client().send({std::move(method), std::move(target), std::move(headers), std::move(body)});
  EXPECT_NE(r.status, 0) << r;
  if (r.status != 0) {
    EXPECT_TRUE(r.header("X-Request-Id").has_value() && !r.header("X-Request-Id")->empty())
        << "every response carries X-Request-Id:\n"
        << r;
  }
  return r;
}

http_response api_test::create(std::string body, std::vector<http_header> headers) const {
  headers.emplace_back("Content-Type", "application/json");
  return call("POST", "/hosts", std::move(body), std::move(headers));
}

json api_test::create_active(std::string body, std::vector<http_header> headers) const {
  const auto r = create(std::move(body), std::move(headers));
  EXPECT_EQ(r.status, 201) << r;
  if (r.status != 201) {
    return json(nullptr);
  }
  auto j = body_json(r);
  EXPECT_EQ(j.value("status", json()), "active") << r;
  return j;
}

json api_test::poll_host(const std::string& id, const std::function<bool(const json&)>& done,
                         std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  json last(nullptr);
  for (;;) {
    const auto r = get("/hosts/" + id);
    if (r.status != 200) {
      ADD_FAILURE() << "GET /hosts/" << id << " while polling:\n" << r;
      return last;
    }
    last = body_json(r);
    if (done(last)) {
      return last;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ADD_FAILURE() << "host " << id << " did not reach the expected state; last: " << last.dump();
      return last;
    }
    std::this_thread::sleep_for(k_poll_interval);
  }
}

json api_test::list_all() const {
  const auto r = get("/hosts");
  EXPECT_EQ(r.status, 200) << r;
  auto j = body_json(r);
  EXPECT_TRUE(j.is_array()) << r;
  return j.is_array() ? j : json::array();
}

json api_test::find_failed(std::string_view last_error) const {
  const auto r = get("/hosts?status=error");
  EXPECT_EQ(r.status, 200) << r;
  const auto j = body_json(r);
  if (j.is_array()) {
    for (const auto& h : j) {
      if (h.value("last_error", "") == last_error) {
        return h;
      }
    }
  }
  ADD_FAILURE() << "no host in status error with last_error " << json(last_error).dump()
                << "; hosts in error: " << j.dump();
  return json(nullptr);
}

}  // namespace litterbox::test::api
