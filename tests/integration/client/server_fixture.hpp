#pragma once

#include "client/client.hpp"
#include "tests/support/litterboxd_process.hpp"
#include "tests/support/pg_database.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace litterbox::client::test {

inline constexpr const char* k_token = "client-test-token-6d1e9b";

/// One throw-away database and one `litterboxd serve --hypervisor=fake` per test suite:
/// a 2 s provisioning timeout (so `fail-boot` fails fast), a named size `small`, and pages
/// of two hosts so listing has to follow rel="next" links.
class server_suite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    try {
      db_ = std::make_unique<litterbox::test::test_database>();
      litterbox::test::litterboxd_options o;
      o.binary = LB_LITTERBOXD_PATH;
      o.database_url = db_->url();
      o.service_tokens = {k_token};
      o.args = {"--provision-timeout",  "2", "--instance-types", "small=1:1024",
                "--list-default-limit", "2", "--ssh-ports",      "43000-43999"};
      server_ = std::make_unique<litterbox::test::litterboxd_process>(std::move(o));
    } catch (const std::exception& e) {
      start_error_ = e.what();
    }
  }
  static void TearDownTestSuite() {
    server_.reset();
    db_.reset();
  }
  void SetUp() override {
    ASSERT_TRUE(start_error_.empty()) << "litterboxd did not start: " << start_error_;
    ASSERT_TRUE(server_ && server_->running()) << server_->output_tail();
  }

  static std::string url() { return "http://127.0.0.1:" + std::to_string(server_->port()); }
  static client_config config(std::string token = k_token) {
    client_config c;
    c.url = url();
    c.token = std::move(token);
    c.create_timeout = std::chrono::seconds(60);
    c.request_timeout = std::chrono::seconds(20);
    return c;
  }

  static inline std::unique_ptr<litterbox::test::test_database> db_;
  static inline std::unique_ptr<litterbox::test::litterboxd_process> server_;
  static inline std::string start_error_;
};

}  // namespace litterbox::client::test
