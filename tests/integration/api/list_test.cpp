#include "tests/integration/api/api_fixture.hpp"

#include <set>

namespace litterbox::test::api {
namespace {

/// The target inside a Link header value `<…>; rel="next"` (an absolute URL is reduced to
/// its path and query).
std::optional<std::string> next_link(const http_response& r) {
  for (const auto& value : r.header_values("Link")) {
    if (value.find("rel=\"next\"") == std::string::npos) {
      continue;
    }
    const auto open = value.find('<');
    const auto close = value.find('>');
    if (open == std::string::npos || close == std::string::npos || close < open) {
      return std::nullopt;
    }
    auto target = value.substr(open + 1, close - open - 1);
    if (const auto scheme = target.find("://"); scheme != std::string::npos) {
      const auto path = target.find('/', scheme + 3);
      target = path == std::string::npos ? "/" : target.substr(path);
    }
    return target;
  }
  return std::nullopt;
}

// Each test of this suite gets a fresh database when run alone (ctest); when run together they
// share one, so counts are taken relative to what the test itself created.
class list_hosts : public api_test {};

TEST_F(list_hosts, ReturnsAnArrayOfHostsNewestFirst) {
  std::vector<std::string> created;
  for (int i = 0; i < 3; ++i) {
    created.push_back(create_active("{}")["id"].get<std::string>());
  }
  const auto r = get("/hosts");
  ASSERT_EQ(r.status, 200) << r;
  const auto all = body_json(r);
  ASSERT_TRUE(all.is_array()) << r;
  ASSERT_GE(all.size(), 3U);
  for (const auto& h : all) {
    expect_host_shape(h);
  }
  // Newest first: our three are the first three, in reverse creation order.
  EXPECT_EQ(all[0]["id"], created[2]);
  EXPECT_EQ(all[1]["id"], created[1]);
  EXPECT_EQ(all[2]["id"], created[0]);
  for (std::size_t i = 1; i < all.size(); ++i) {
    EXPECT_GE(parse_time(all[i - 1]["created_at"]), parse_time(all[i]["created_at"]));
    EXPECT_GT(all[i - 1]["id"].get<std::string>(), all[i]["id"].get<std::string>());
  }
  EXPECT_FALSE(next_link(r).has_value()) << "no parameters: all rows, no next page";
}

TEST_F(list_hosts, StatusFilterIsRepeatable) {
  const auto active = create_active("{}")["id"].get<std::string>();
  ASSERT_EQ(create(R"({"image": "registry.test/fail-create:list"})").status, 502);

  const auto only_error = body_json(get("/hosts?status=error"));
  ASSERT_TRUE(only_error.is_array());
  ASSERT_FALSE(only_error.empty());
  for (const auto& h : only_error) {
    EXPECT_EQ(h["status"], "error");
  }
  const auto only_active = body_json(get("/hosts?status=active"));
  ASSERT_TRUE(only_active.is_array());
  std::set<std::string> ids;
  for (const auto& h : only_active) {
    EXPECT_EQ(h["status"], "active");
    ids.insert(h["id"].get<std::string>());
  }
  EXPECT_TRUE(ids.contains(active));
  const auto both = body_json(get("/hosts?status=active&status=error"));
  ASSERT_TRUE(both.is_array());
  EXPECT_EQ(both.size(), only_error.size() + only_active.size());
  const auto none = body_json(get("/hosts?status=deleting"));
  ASSERT_TRUE(none.is_array());
  EXPECT_TRUE(none.empty()) << none.dump();
}

TEST_F(list_hosts, LimitAndAfterPageThroughEveryRowOnceWithLinkNext) {
  for (int i = 0; i < 5; ++i) {
    create_active("{}");
  }
  const auto all = list_all();
  ASSERT_GE(all.size(), 5U);

  std::vector<std::string> paged;
  std::string target = "/hosts?limit=2";
  for (int page = 0; page < 100; ++page) {
    const auto r = get(target);
    ASSERT_EQ(r.status, 200) << r;
    const auto rows = body_json(r);
    ASSERT_TRUE(rows.is_array()) << r;
    EXPECT_LE(rows.size(), 2U);
    for (const auto& h : rows) {
      paged.push_back(h["id"].get<std::string>());
    }
    const auto next = next_link(r);
    if (paged.size() < all.size()) {
      ASSERT_TRUE(next.has_value()) << "rows remain, so Link rel=\"next\" is set: " << r;
      target = *next;
    } else {
      EXPECT_FALSE(next.has_value()) << "no rows remain: " << r;
      break;
    }
  }
  std::vector<std::string> expected;
  for (const auto& h : all) {
    expected.push_back(h["id"].get<std::string>());
  }
  EXPECT_EQ(paged, expected);
}

TEST_F(list_hosts, AfterCursorReturnsOnlyOlderRows) {
  const auto older = create_active("{}")["id"].get<std::string>();
  const auto newer = create_active("{}")["id"].get<std::string>();
  const auto r = get("/hosts?after=" + newer);
  ASSERT_EQ(r.status, 200) << r;
  const auto rows = body_json(r);
  ASSERT_TRUE(rows.is_array() && !rows.empty()) << r;
  EXPECT_EQ(rows[0]["id"], older);
  for (const auto& h : rows) {
    EXPECT_NE(h["id"], newer);
  }
}

TEST_F(list_hosts, LimitOneReturnsTheNewest) {
  create_active("{}");
  const auto newest = create_active("{}")["id"];
  const auto r = get("/hosts?limit=1");
  ASSERT_EQ(r.status, 200) << r;
  const auto rows = body_json(r);
  ASSERT_EQ(rows.size(), 1U) << r;
  EXPECT_EQ(rows[0]["id"], newest);
  EXPECT_TRUE(next_link(r).has_value()) << r;
}

class list_query : public list_hosts,
                   public ::testing::WithParamInterface<std::pair<std::string, std::string>> {};

TEST_P(list_query, BadParameterIs422AtTheQuery) {
  const auto& [query, name] = GetParam();
  expect_validation(get("/hosts?" + query), {"query", name});
}

INSTANTIATE_TEST_SUITE_P(
    bad, list_query,
    ::testing::Values(std::pair<std::string, std::string>{"status=bogus", "status"},
                      std::pair<std::string, std::string>{"status=active&status=nope", "status"},
                      std::pair<std::string, std::string>{"status=", "status"},
                      std::pair<std::string, std::string>{"limit=0", "limit"},
                      std::pair<std::string, std::string>{"limit=-1", "limit"},
                      std::pair<std::string, std::string>{"limit=abc", "limit"},
                      std::pair<std::string, std::string>{"limit=1.5", "limit"},
                      std::pair<std::string, std::string>{"limit=99999999999999999999", "limit"},
                      std::pair<std::string, std::string>{"after=not-a-uuid", "after"},
                      std::pair<std::string, std::string>{"after=", "after"}),
    [](const auto& p) { return p.param.second + std::to_string(p.index); });

// A server configured with a default page size.
class list_default_limit : public api_test {
 protected:
  static void SetUpTestSuite() {
    auto args = default_args();
    set_arg(args, "--list-default-limit", "2");
    start_server(std::move(args));
  }
};

TEST_F(list_default_limit, ListWithoutLimitReturnsTheConfiguredPageWithLinkNext) {
  for (int i = 0; i < 3; ++i) {
    create_active("{}");
  }
  const auto r = get("/hosts");
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(body_json(r).size(), 2U) << r;
  const auto next = next_link(r);
  ASSERT_TRUE(next.has_value()) << r;
  const auto rest = get(*next);
  ASSERT_EQ(rest.status, 200) << rest;
  EXPECT_GE(body_json(rest).size(), 1U) << rest;
}

}  // namespace
}  // namespace litterbox::test::api
