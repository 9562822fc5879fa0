#include "tests/integration/api/api_fixture.hpp"

#include <chrono>

namespace litterbox::test::api {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view k_unknown_id = "01890a5d-ac96-774b-bcce-b302099a8057";

using sys_us = std::chrono::sys_time<std::chrono::microseconds>;

sys_us now_us() {
  return std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now());
}

void expect_host_not_found(const http_response& r) {
  expect_error(r, 404, "host not found", "NOT_FOUND");
}

class get_host : public api_test {};

TEST_F(get_host, ReturnsTheHost) {
  const auto h = create_active("{}");
  const auto r = get("/hosts/" + h["id"].get<std::string>());
  ASSERT_EQ(r.status, 200) << r;
  const auto g = body_json(r);
  expect_host_shape(g);
  for (const char* k : {"id", "name", "status", "image", "ssh_port", "known_hosts", "created_at",
                        "activated_at", "expires_at"}) {
    EXPECT_EQ(g[k], h[k]) << k;
  }
}

TEST_F(get_host, UnknownIdIs404HostNotFound) {
  expect_host_not_found(get("/hosts/" + std::string(k_unknown_id)));
}

TEST_F(get_host, UppercaseIdFindsTheSameHost) {
  const auto id = create_active("{}")["id"].get<std::string>();
  std::string upper = id;
  for (auto& c : upper) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  const auto r = get("/hosts/" + upper);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(body_json(r)["id"], id) << "ids are returned lowercase";
}

class malformed_id : public api_test, public ::testing::WithParamInterface<std::string> {};

TEST_P(malformed_id, Is422AtPathHostIdOnEveryHostRoute) {
  const std::string base = "/hosts/" + GetParam();
  expect_validation(call("GET", base), {"path", "host_id"});
  expect_validation(call("DELETE", base), {"path", "host_id"});
  expect_validation(call("POST", base + "/renew", "{}"), {"path", "host_id"});
}

INSTANTIATE_TEST_SUITE_P(ids, malformed_id,
                         ::testing::Values("not-a-uuid", "12345",
                                           "01890a5d-ac96-774b-bcce-b302099a805",
                                           "01890a5d-ac96-774b-bcce-b302099a80577",
                                           "01890a5dxac96x774bxbccexb302099a8057",
                                           "g1890a5d-ac96-774b-bcce-b302099a8057", "%00", "%C3%A9",
                                           "01890a5d-ac96-774b-bcce-b302099a8057%00"),
                         [](const auto& p) { return "case" + std::to_string(p.index); });

class renew : public api_test {
 protected:
  http_response renew_host(const std::string& id, std::string body) const {
    return call("POST", "/hosts/" + id + "/renew", std::move(body),
                {{"Content-Type", "application/json"}});
  }
  /// Renews with `body` and checks the result is about now + the default lease.
  void expect_default_lease(const std::string& body) const {
    const auto id =
        create_active(R"({"expires_at": "2099-01-01T00:00:00Z"})")["id"].get<std::string>();
    const auto before = now_us();
    const auto r = renew_host(id, body);
    const auto after = now_us();
    ASSERT_EQ(r.status, 200) << "body " << json(body).dump() << '\n' << r;
    const auto h = body_json(r);
    expect_host_shape(h);
    EXPECT_EQ(h["id"], id);
    ASSERT_TRUE(h["expires_at"].is_string()) << "renew never makes a host permanent: " << r;
    const auto expires = parse_time(h["expires_at"]);
    // Server and test share this machine's clock; one second covers rounding.
    EXPECT_GE(expires, before + std::chrono::seconds(k_lease_seconds) - 1s) << r;
    EXPECT_LE(expires, after + std::chrono::seconds(k_lease_seconds) + 1s) << r;
  }
};

TEST_F(renew, EmptyBodyRenewsForTheDefaultLease) {
  expect_default_lease("");
}
TEST_F(renew, EmptyObjectRenewsForTheDefaultLease) {
  expect_default_lease("{}");
}
TEST_F(renew, NullBodyRenewsForTheDefaultLease) {
  expect_default_lease("null");
}
TEST_F(renew, NullExpiresAtNeverMakesTheHostPermanent) {
  expect_default_lease(R"({"expires_at": null})");
}

TEST_F(renew, PermanentHostGetsTheDefaultLeaseOnRenew) {
  const auto id = create_active(R"({"expires_at": null})")["id"].get<std::string>();
  const auto r = renew_host(id, "{}");
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_TRUE(body_json(r)["expires_at"].is_string()) << r;
}

TEST_F(renew, ExplicitTimestampIsStoredInUtc) {
  const auto id = create_active("{}")["id"].get<std::string>();
  const auto r = renew_host(id, R"({"expires_at": "2098-03-04T05:06:07-03:00"})");
  ASSERT_EQ(r.status, 200) << r;
  const auto h = body_json(r);
  expect_host_shape(h);
  EXPECT_EQ(parse_time(h["expires_at"]), parse_time(json("2098-03-04T08:06:07Z"))) << r;
  const auto g = body_json(get("/hosts/" + id));
  EXPECT_EQ(g["expires_at"], h["expires_at"]) << "the renewal is persisted";
}

TEST_F(renew, UnknownHostIs404) {
  expect_host_not_found(renew_host(std::string(k_unknown_id), "{}"));
}

TEST_F(renew, HostInErrorIs409HostState) {
  const auto r = create(R"({"image": "registry.test/fail-create:renew"})");
  ASSERT_EQ(r.status, 502) << r;
  const auto failed = find_failed(body_json(r)["detail"].get<std::string>());
  ASSERT_TRUE(failed.is_object());
  const auto rr = renew_host(failed["id"].get<std::string>(), "{}");
  EXPECT_EQ(rr.status, 409) << rr;
  const auto j = body_json(rr);
  ASSERT_TRUE(j.is_object()) << rr;
  EXPECT_TRUE(j["detail"].is_string()) << rr;
  EXPECT_EQ(j.value("error_code", ""), "HOST_STATE") << rr;
}

TEST_F(renew, MalformedBodyIs422) {
  const auto id = create_active("{}")["id"].get<std::string>();
  EXPECT_EQ(renew_host(id, "{not json").status, 422);
  EXPECT_EQ(renew_host(id, R"({"expires_at": "2099-01-01T00:00:00"})").status, 422);
  EXPECT_EQ(renew_host(id, R"({"expires_at": 5})").status, 422);
  EXPECT_EQ(renew_host(id, "[]").status, 422);
}

class delete_host : public api_test {};

TEST_F(delete_host, Returns204WithEmptyBodyThenTheHostIsGone) {
  const auto id = create_active("{}")["id"].get<std::string>();
  const auto r = call("DELETE", "/hosts/" + id);
  EXPECT_EQ(r.status, 204) << r;
  EXPECT_TRUE(r.body.empty()) << r;
  expect_host_not_found(get("/hosts/" + id));
  for (const auto& h : list_all()) {
    EXPECT_NE(h["id"], id);
  }
}

TEST_F(delete_host, SecondDeleteIs404) {
  const auto id = create_active("{}")["id"].get<std::string>();
  ASSERT_EQ(call("DELETE", "/hosts/" + id).status, 204);
  expect_host_not_found(call("DELETE", "/hosts/" + id));
}

TEST_F(delete_host, UnknownHostIs404) {
  expect_host_not_found(call("DELETE", "/hosts/" + std::string(k_unknown_id)));
}

TEST_F(delete_host, HostInErrorCanBeDeleted) {
  const auto r = create(R"({"image": "registry.test/missing:delete"})");
  ASSERT_EQ(r.status, 502) << r;
  const auto failed = find_failed(body_json(r)["detail"].get<std::string>());
  ASSERT_TRUE(failed.is_object());
  const auto id = failed["id"].get<std::string>();
  EXPECT_EQ(call("DELETE", "/hosts/" + id).status, 204);
  expect_host_not_found(get("/hosts/" + id));
}

// A server whose image pulls take long enough that a host stays in an early provisioning
// step while the test acts on it.
class slow_provisioning : public api_test {
 protected:
  static void SetUpTestSuite() {
    auto args = default_args();
    set_arg(args, "--provision-timeout", "30");
    set_arg(args, "--fake-pull-delay-ms", "3000");
    start_server(std::move(args));
  }
};

TEST_F(slow_provisioning, DeleteWhileProvisioningIs409HostState) {
  const auto r = create("{}", {{"Prefer", "respond-async"}});
  ASSERT_EQ(r.status, 202) << r;
  const auto h = body_json(r);
  expect_host_shape(h);
  const auto status = h["status"].get<std::string>();
  EXPECT_TRUE(status == "provisioning" || status == "pulling_image") << r;
  const auto id = h["id"].get<std::string>();
  const auto d = call("DELETE", "/hosts/" + id);
  expect_error(d, 409, body_json(d).value("detail", ""), "HOST_STATE");
  // The create is not disturbed by the refused DELETE.
  const auto done = poll_host(id, [](const json& x) {
    return x.value("status", "") == "active" || x.value("status", "") == "error";
  });
  EXPECT_EQ(done["status"], "active") << done.dump();
  EXPECT_EQ(call("DELETE", "/hosts/" + id).status, 204);
}

TEST_F(slow_provisioning, RetryWhileTheFirstIsProvisioningWaitsForTheSameHost) {
  const std::vector<http_header> key{{"Idempotency-Key", "in-flight-key"}};
  auto async_headers = key;
  async_headers.emplace_back("Prefer", "respond-async");
  const auto first = create("{}", async_headers);
  ASSERT_EQ(first.status, 202) << first;
  const auto count = list_all().size();
  const auto second = create("{}", key);
  ASSERT_EQ(second.status, 201) << second;
  const auto h = body_json(second);
  EXPECT_EQ(h["id"], body_json(first)["id"]);
  EXPECT_EQ(h["status"], "active");
  EXPECT_EQ(list_all().size(), count) << "never a second VM";
}

TEST_F(slow_provisioning, RespondAsyncReturnsBeforeActive) {
  const auto r = create("{}", {{"Prefer", "respond-async"}});
  ASSERT_EQ(r.status, 202) << r;
  const auto h = body_json(r);
  EXPECT_NE(h["status"], "active") << "202 is returned at once, before the slow pull ends";
  EXPECT_EQ(h["known_hosts"], "");
  EXPECT_TRUE(h["activated_at"].is_null());
}

// A server with room for exactly two SSH ports.
class capacity : public api_test {
 protected:
  static void SetUpTestSuite() {
    auto args = default_args();
    set_arg(args, "--ssh-ports",
            std::to_string(k_ssh_port_min) + "-" + std::to_string(k_ssh_port_min + 1));
    start_server(std::move(args));
  }
};

TEST_F(capacity, NoSshPortLeftIs503CapacityWithRetryAfterAndDeleteFreesIt) {
  const auto a = create_active("{}");
  const auto b = create_active("{}");
  ASSERT_TRUE(a.is_object() && b.is_object());
  EXPECT_NE(a["ssh_port"], b["ssh_port"]);
  const auto r = create("{}");
  EXPECT_EQ(r.status, 503) << r;
  const auto j = body_json(r);
  ASSERT_TRUE(j.is_object()) << r;
  EXPECT_TRUE(j["detail"].is_string()) << r;
  EXPECT_EQ(j.value("error_code", ""), "CAPACITY") << r;
  EXPECT_TRUE(r.header("Retry-After").has_value()) << r;
  ASSERT_EQ(call("DELETE", "/hosts/" + a["id"].get<std::string>()).status, 204);
  const auto c = create_active("{}");
  EXPECT_EQ(c.value("ssh_port", 0), a["ssh_port"].get<int>()) << "the freed port is reused";
}

}  // namespace
}  // namespace litterbox::test::api
