#include "tests/integration/api/api_fixture.hpp"
#include "tests/integration/api/sse_client.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace litterbox::test::api {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view k_unknown_id = "01890a5d-ac96-774b-bcce-b302099a8057";

std::vector<std::pair<std::string, std::string>> kinds_of(const std::vector<sse_event>& events,
                                                          const std::string& host_id) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& e : events) {
    if (e.data["host_id"] == host_id) {
      out.emplace_back(e.data["type"].get<std::string>(), e.data["status"].get<std::string>());
    }
  }
  return out;
}

bool has_status(const std::vector<sse_event>& events, const std::string& host_id,
                std::string_view status) {
  for (const auto& e : events) {
    if (e.data["host_id"] == host_id && e.data["status"] == status) {
      return true;
    }
  }
  return false;
}

class events : public api_test {};

TEST_F(events, ACreatesStreamShowsEveryTransitionInOrderWithIdsAndData) {
  sse_client stream(process().port(), "/events");
  const auto head = stream.head();
  ASSERT_NE(head.find("200 OK"), std::string::npos) << head;
  ASSERT_NE(head.find("Content-Type: text/event-stream"), std::string::npos) << head;
  // The stream's starting point is fixed once it is open.
  stream.until([&](const auto&) { return !stream.comments().empty(); });
  ASSERT_FALSE(stream.comments().empty());

  const auto h = create_active();
  const std::string id = h["id"];
  const auto got = stream.until([&](const auto& ev) { return has_status(ev, id, "active"); });
  using P = std::pair<std::string, std::string>;
  EXPECT_EQ(kinds_of(got, id),
            (std::vector<P>{P{"created", "provisioning"}, P{"status", "pulling_image"},
                            P{"status", "creating_vm"}, P{"status", "bootstrapping"},
                            P{"status", "active"}}));
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].data["id"], got[i].id);
    EXPECT_TRUE(is_utc_timestamp(got[i].data["at"].get<std::string>()));
    EXPECT_TRUE(got[i].data.contains("last_error"));
    if (i > 0) {
      EXPECT_GT(got[i].id, got[i - 1].id);
    }
  }
}

TEST_F(events, ResumingAfterAnIdGetsEveryLaterEventExactlyOnce) {
  const auto h = create_active();
  const std::string id = h["id"];
  sse_client all(process().port(), "/hosts/" + id + "/events?after=0");
  ASSERT_NE(all.head().find("200 OK"), std::string::npos);
  const auto first = all.until([&](const auto& ev) { return has_status(ev, id, "active"); });
  ASSERT_EQ(first.size(), 5U);

  const auto resume_at = std::to_string(first[1].id);
  sse_client resumed(process().port(), "/events?host_id=" + id + "&after=0",
                     {"Last-Event-ID: " + resume_at});  // the header wins over ?after=
  ASSERT_NE(resumed.head().find("200 OK"), std::string::npos);
  const auto rest = resumed.until([&](const auto& ev) { return has_status(ev, id, "active"); });
  ASSERT_EQ(rest.size(), 3U);
  for (std::size_t i = 0; i < rest.size(); ++i) {
    EXPECT_EQ(rest[i].id, first[i + 2].id);
  }

  ASSERT_EQ(call("DELETE", "/hosts/" + id).status, 204);
  const auto after_delete = resumed.until(
      [&](const auto& ev) { return !ev.empty() && ev.back().data["type"] == "deleted"; });
  ASSERT_FALSE(after_delete.empty());
  EXPECT_EQ(after_delete.back().data["type"], "deleted");
}

TEST_F(events, StatusFiltersKeepOnlyThoseEvents) {
  const auto h = create_active();
  const std::string id = h["id"];
  sse_client active_only(process().port(),
                         "/events?after=0&status=active&status=error&host_id=" + id);
  ASSERT_NE(active_only.head().find("200 OK"), std::string::npos);
  const auto got = active_only.until([&](const auto& ev) { return has_status(ev, id, "active"); });
  using P = std::pair<std::string, std::string>;
  EXPECT_EQ(kinds_of(got, id), (std::vector<P>{P{"status", "active"}}));
}

TEST_F(events, AResumeOnTheOtherReplicaAndAfterItsRestartGetsEveryEventExactlyOnce) {
  auto other = start_replica();
  sse_client on_a(process().port(), "/events");
  ASSERT_NE(on_a.head().find("200 OK"), std::string::npos);
  on_a.until([&](const auto&) { return !on_a.comments().empty(); });

  // Created through the other replica: this one's stream learns of it through NOTIFY.
  const auto created = http_client("127.0.0.1", other->port()).post("/hosts", "{}", {bearer()});
  ASSERT_EQ(created.status, 201) << created;
  const std::string id = body_json(created)["id"];
  const auto first_two = on_a.until([&](const auto& ev) { return kinds_of(ev, id).size() >= 2; });
  ASSERT_GE(first_two.size(), 2U);
  const auto seen_until = first_two[1].id;

  // The client drops and resumes on the other replica.
  std::vector<sse_event> resumed_events;
  {
    sse_client on_b(other->port(), "/events?host_id=" + id,
                    {"Last-Event-ID: " + std::to_string(seen_until)});
    ASSERT_NE(on_b.head().find("200 OK"), std::string::npos);
    resumed_events = on_b.until([&](const auto& ev) { return has_status(ev, id, "active"); });
  }
  using P = std::pair<std::string, std::string>;
  EXPECT_EQ(kinds_of(resumed_events, id),
            (std::vector<P>{P{"status", "creating_vm"}, P{"status", "bootstrapping"},
                            P{"status", "active"}}));
  ASSERT_FALSE(resumed_events.empty());
  EXPECT_GT(resumed_events.front().id, seen_until);

  // That replica restarts; the client resumes there again and sees the delete, once.
  const auto last = resumed_events.back().id;
  other->stop();
  other = start_replica();
  ASSERT_EQ(call("DELETE", "/hosts/" + id).status, 204);
  sse_client after_restart(other->port(), "/hosts/" + id + "/events",
                           {"Last-Event-ID: " + std::to_string(last)});
  ASSERT_NE(after_restart.head().find("200 OK"), std::string::npos);
  const auto tail = after_restart.until(
      [&](const auto& ev) { return !ev.empty() && ev.back().data["type"] == "deleted"; });
  EXPECT_EQ(kinds_of(tail, id),
            (std::vector<P>{P{"status", "deleting"}, P{"deleted", "deleting"}}));
}

TEST_F(events, BadResumePointsAndStatusesAre422AndAnUnknownHostIs404) {
  expect_validation(call("GET", "/events", {}, {{"Last-Event-ID", "soon"}}),
                    {"header", "Last-Event-ID"});
  expect_validation(get("/events?after=-1"), {"query", "after"});
  expect_validation(get("/events?status=sleeping"), {"query", "status"});
  expect_error(get("/hosts/" + std::string(k_unknown_id) + "/events"), 404, "host not found",
               "NOT_FOUND");
  const auto unauthenticated = call("GET", "/events", {}, {}, false);
  EXPECT_EQ(unauthenticated.status, 401);
}

}  // namespace
}  // namespace litterbox::test::api
