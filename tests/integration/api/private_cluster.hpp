#pragma once

#include "tests/integration/api/api_fixture.hpp"
#include "tests/support/pg_cluster.hpp"
#include "tests/support/pg_database.hpp"

#include <memory>
#include <string>
#include <vector>

namespace litterbox::test::api {

/// A suite whose server runs against a PostgreSQL cluster of its own, which its tests may stop
/// and start under it. `Suite::server_args()` gives the server's flags. The cluster is
/// running again (if it can be) and removed when the suite ends.
template <class Suite>
class private_cluster_test : public api_test {
 protected:
  static void SetUpTestSuite() {
    try {
      cluster_ = std::make_unique<test_cluster>();  // running once constructed
      database_ = std::make_unique<test_database>(cluster_->url());
      start_server_on(database_->url(), Suite::server_args());
    } catch (const std::exception& e) {
      setup_error_ = e.what();
    }
  }
  static void TearDownTestSuite() {
    api_test::TearDownTestSuite();
    if (cluster_ && !cluster_->running()) {
      try {
        cluster_->start();
      } catch (const std::exception&) {
        // The cluster directory is removed either way.
      }
    }
    database_.reset();
    cluster_.reset();
  }
  void SetUp() override {
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
    api_test::SetUp();
  }

  static inline std::unique_ptr<test_cluster> cluster_;
  static inline std::unique_ptr<test_database> database_;
  static inline std::string setup_error_;
};

}  // namespace litterbox::test::api
