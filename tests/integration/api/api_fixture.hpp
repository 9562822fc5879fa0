#pragma once

#include "tests/support/http_client.hpp"
#include "tests/support/litterboxd_process.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace litterbox::test::api {

using json = nlohmann::ordered_json;

/// Two tokens are configured so rotation (several valid at once) can be tested.
inline constexpr std::string_view k_token = "primary-token-3f9c1a7e5b2d";
inline constexpr std::string_view k_token2 = "secondary-token-8e4d2c6a0f1b";

/// The configuration every suite's server starts with unless the suite says otherwise.
inline constexpr int k_lease_seconds = 3600;
inline constexpr int k_max_cpus = 8;
inline constexpr int k_max_memory_mib = 16384;
inline constexpr int k_max_disk_gb = 100;
inline constexpr int k_ssh_port_min = 41000;
inline constexpr int k_ssh_port_max = 41999;
inline constexpr int k_provision_timeout_s = 2;

/// The fields of the Host object, in API.md order.
const std::vector<std::string>& host_fields();

/// The server flags of the default configuration above.
std::vector<std::string> default_args();

/// Sets `flag` to `value` in `args`, replacing an earlier value of the same flag.
void set_arg(std::vector<std::string>& args, std::string_view flag, std::string value);

/// `Authorization: Bearer <token>`.
http_header bearer(std::string_view token = k_token);

/// The JSON in `r`'s body; a failed expectation (and null) when it is not JSON.
json body_json(const http_response& r);

/// Checks the Host object contract of API.md: exactly the documented fields in order, their
/// JSON types, UUIDv7 id, name from id, RFC 3339 `Z` timestamps, no `env`.
void expect_host_shape(const json& host);

/// Checks `{"detail": <detail>, "error_code": <code>}` with the given status.
void expect_error(const http_response& r, int status, std::string_view detail,
                  std::string_view error_code);

/// Checks a 422 body with a list `detail` of {type, loc, msg} items, one of which has
/// exactly `loc`; returns that item (null if none).
json expect_validation(const http_response& r, const std::vector<std::string>& loc);

/// True when `text` is RFC 3339 in UTC with a `Z` suffix.
bool is_utc_timestamp(std::string_view text);

/// Parses a timestamp of the server (microseconds since the epoch).
std::chrono::sys_time<std::chrono::microseconds> parse_time(const json& value);

/// The test database and the server process shared by the tests of one suite.
struct server_state;

/// Base fixture: one fresh database and one `litterboxd serve --hypervisor=fake` per test
/// suite. A suite that needs other flags defines its own static SetUpTestSuite calling
/// start_server(). Every response is checked for X-Request-Id.
class api_test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { start_server(default_args()); }
  static void TearDownTestSuite();
  /// Starts the suite's server with exactly these flags (after the fixed serve flags) and
  /// this extra environment.
  static void start_server(std::vector<std::string> args,
                           std::vector<std::pair<std::string, std::string>> env = {});

  void SetUp() override;
  void TearDown() override;

  static const http_client& client();
  static litterboxd_process& process();
  /// The admin-free URL of the suite's database.
  static std::string database_url();
  /// Replaces the suite's server by a new one on `database_url` (for outage tests).
  static void start_server_on(std::string database_url, std::vector<std::string> args,
                              std::vector<std::pair<std::string, std::string>> env = {});
  /// Another `litterboxd serve` on the suite's database, and so on its fake node
  /// (fake_node_dir): a replica of the suite's server, with these flags and environment.
  /// Throws what litterboxd_process throws when it does not start.
  static std::unique_ptr<litterboxd_process> start_replica(
      std::vector<std::string> args = default_args(),
      std::vector<std::pair<std::string, std::string>> env = {});

  /// Sends a request with a bearer token (unless `auth` is false) and checks X-Request-Id.
  http_response call(std::string method, std::string target, std::string body = {},
                     std::vector<http_header> headers = {}, bool auth = true) const;
  http_response get(std::string target) const { return call("GET", std::move(target)); }
  /// POST /hosts with `body` and optional extra headers.
  http_response create(std::string body = "{}", std::vector<http_header> headers = {}) const;
  /// POST /hosts expecting 201 active; returns the Host (null on failure, with a failure
  /// recorded).
  json create_active(std::string body = "{}", std::vector<http_header> headers = {}) const;
  /// GET /hosts/{id} until `done(host)` holds or `timeout` passes; returns the last Host.
  json poll_host(const std::string& id, const std::function<bool(const json&)>& done,
                 std::chrono::milliseconds timeout = std::chrono::seconds(30)) const;
  /// GET /hosts (no parameters) as an array.
  json list_all() const;
  /// The newest host whose status is `error` and last_error equals `last_error`.
  json find_failed(std::string_view last_error) const;

 private:
  static std::unique_ptr<server_state> state_;
  static std::string start_error_;
};

}  // namespace litterbox::test::api
