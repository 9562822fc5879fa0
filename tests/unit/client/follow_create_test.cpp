#include "client/client.hpp"
#include "client/errc.hpp"
#include "schema/host.hpp"
#include "tests/unit/client/fake_transport.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace litterbox::client::test {
namespace {

using namespace std::chrono_literals;
using schema::host_status;

const std::string k_id = "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b";

schema::host sample_host(host_status status, std::string last_error = {}) {
  schema::host h;
  h.id = k_id;
  h.name = schema::host_name_for(h.id);
  h.status = status;
  h.last_error = std::move(last_error);
  h.provider = "fake";
  h.image = "img";
  h.cpus = 1;
  h.memory_mib = 512;
  h.ssh_username = "agent";
  h.created_at = timestamp(std::chrono::seconds(1800000000));
  h.updated_at = h.created_at;
  return h;
}

http_response host_answer(host_status status, std::string last_error = {}) {
  return response(200, schema::to_json(sample_host(status, std::move(last_error))).dump());
}

/// One SSE message for an event of the host.
std::string event(std::int64_t id, std::string_view type, std::string_view status,
                  std::string_view last_error = "") {
  return "id: " + std::to_string(id) + "\ndata: {\"id\":" + std::to_string(id) +
         ",\"at\":\"2026-12-02T01:02:03Z\",\"host_id\":\"" + k_id + "\",\"type\":\"" +
         std::string(type) + "\",\"status\":\"" + std::string(status) + "\",\"last_error\":\"" +
         std::string(last_error) + "\"}\n\n";
}

std::string opening(std::int64_t id) {
  return ": stream open\nid: " + std::to_string(id) + "\n\n";
}

const std::vector<host_status> k_all = {host_status::provisioning, host_status::pulling_image,
                                        host_status::creating_vm, host_status::bootstrapping,
                                        host_status::active};

class FollowCreate : public ::testing::Test {
 protected:
  client make() {
    auto t = std::make_unique<fake_transport>(time_);
    transport_ = t.get();
    client_config cfg{"http://svc", "tok", 300s, 30s};
    return client(cfg, std::move(t), {}, time_.env(),
                  [] { return timestamp(std::chrono::seconds(1800000000)); });
  }
  result<schema::host> follow(client& c, std::optional<std::int64_t> after,
                              std::chrono::milliseconds timeout = 60s,
                              host_status initial = host_status::provisioning) {
    return c.follow_create(sample_host(initial), after, timeout,
                           [this](host_status s) { drawn_.push_back(s); });
  }
  /// The GETs of the host itself (polls and the final fetch), not of its events.
  std::size_t host_gets() const {
    std::size_t n = 0;
    for (const auto& r : transport_->seen) {
      if (r.method == "GET" && r.url == "http://svc/hosts/" + k_id) {
        ++n;
      }
    }
    return n;
  }

  fake_time time_;
  fake_transport* transport_ = nullptr;
  std::vector<host_status> drawn_;
};

TEST_F(FollowCreate, StreamDrawsEveryStatusInOrderThenFetchesTheHostOnce) {
  auto c = make();
  transport_->streams.push_back(stream_answer{
      response(200),
      {opening(10), event(11, "created", "provisioning"), event(12, "status", "pulling_image"),
       event(13, "status", "creating_vm") + event(14, "status", "bootstrapping"),
       ": keep-alive\n\n", event(15, "status", "active")}});
  transport_->answers.emplace_back(host_answer(host_status::active));
  const auto h = follow(c, 10);
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->status, host_status::active);
  EXPECT_EQ(drawn_, k_all);
  ASSERT_EQ(transport_->streamed.size(), 1U);
  EXPECT_EQ(transport_->streamed[0].url, "http://svc/hosts/" + k_id + "/events");
  EXPECT_EQ(header(transport_->streamed[0], "Last-Event-ID"), "10");
  EXPECT_EQ(header(transport_->streamed[0], "Authorization"), "Bearer tok");
  EXPECT_EQ(transport_->pieces_taken[0], 6U);  // stopped at `active`, not at the end
  EXPECT_EQ(host_gets(), 1U);                  // no polling, just the final object
}

TEST_F(FollowCreate, ServerWithoutTheStreamIsPolledInstead) {
  for (const int status : {404, 405, 410}) {
    SCOPED_TRACE(status);
    drawn_.clear();
    auto c = make();
    transport_->streams.push_back(stream_answer{response(status, R"({"detail":"Not Found"})"), {}});
    transport_->answers.emplace_back(host_answer(host_status::provisioning));
    transport_->answers.emplace_back(host_answer(host_status::creating_vm));
    transport_->answers.emplace_back(host_answer(host_status::active));
    const auto h = follow(c, 10);
    ASSERT_TRUE(h) << h.error().message;
    EXPECT_EQ(drawn_, (std::vector<host_status>{host_status::provisioning, host_status::creating_vm,
                                                host_status::active}));
    EXPECT_EQ(transport_->streamed.size(), 1U);
    EXPECT_EQ(host_gets(), 3U);
  }
}

TEST_F(FollowCreate, WithoutACursorItPollsAndOpensNoStream) {
  auto c = make();
  transport_->answers.emplace_back(host_answer(host_status::bootstrapping));
  transport_->answers.emplace_back(host_answer(host_status::active));
  const auto h = follow(c, std::nullopt);
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_TRUE(transport_->streamed.empty());
  EXPECT_EQ(drawn_, (std::vector<host_status>{host_status::bootstrapping, host_status::active}));
}

TEST_F(FollowCreate, DroppedStreamResumesAfterTheLastEventWithNothingRepeatedOrLost) {
  auto c = make();
  transport_->streams.push_back(stream_answer{
      make_error(errc::unavailable, "event stream interrupted"),
      {opening(10), event(11, "created", "provisioning"), event(12, "status", "pulling_image")}});
  transport_->streams.push_back(
      stream_answer{response(200),
                    {opening(12), event(13, "status", "creating_vm"),
                     event(14, "status", "bootstrapping"), event(15, "status", "active")}});
  transport_->answers.emplace_back(host_answer(host_status::active));
  const auto h = follow(c, 10);
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(drawn_, k_all);
  ASSERT_EQ(transport_->streamed.size(), 2U);
  EXPECT_EQ(header(transport_->streamed[1], "Last-Event-ID"), "12");
  EXPECT_EQ(time_.sleeps.size(), 1U);  // one backoff before the resume
  EXPECT_EQ(host_gets(), 1U);
}

TEST_F(FollowCreate, StreamThatEndsCleanlyIsResumedToo) {
  auto c = make();
  transport_->streams.push_back(
      stream_answer{response(200), {opening(10), event(11, "created", "provisioning")}});
  transport_->streams.push_back(stream_answer{response(200), {event(12, "status", "active")}});
  transport_->answers.emplace_back(host_answer(host_status::active));
  const auto h = follow(c, 10);
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(drawn_, (std::vector<host_status>{host_status::provisioning, host_status::active}));
  EXPECT_EQ(header(transport_->streamed[1], "Last-Event-ID"), "11");
}

TEST_F(FollowCreate, ResumeThatFailsFallsBackToPollingWithoutDrawingAStatusTwice) {
  auto c = make();
  transport_->streams.push_back(stream_answer{
      make_error(errc::unavailable, "event stream interrupted"),
      {opening(10), event(11, "created", "provisioning"), event(12, "status", "pulling_image")}});
  transport_->streams.push_back(
      stream_answer{make_error(errc::unavailable, "cannot reach the service"), {}});
  transport_->answers.emplace_back(host_answer(host_status::pulling_image));
  transport_->answers.emplace_back(host_answer(host_status::active));
  const auto h = follow(c, 10);
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(drawn_, (std::vector<host_status>{host_status::provisioning, host_status::pulling_image,
                                              host_status::active}));
  EXPECT_EQ(transport_->streamed.size(), 2U);
  EXPECT_EQ(host_gets(), 2U);
}

TEST_F(FollowCreate, HistoryGoneMidStreamFallsBackToPolling) {
  auto c = make();
  transport_->streams.push_back(stream_answer{
      response(200),
      {opening(10), event(11, "created", "provisioning"),
       "event: error\ndata: {\"detail\": \"event history no longer available\"}\n\n"}});
  transport_->answers.emplace_back(host_answer(host_status::active));
  const auto h = follow(c, 10);
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(drawn_, (std::vector<host_status>{host_status::provisioning, host_status::active}));
}

TEST_F(FollowCreate, KeepAlivesDoNotHoldTheCreatePastItsTimeout) {
  auto c = make();
  stream_answer keep_alives{response(200), {opening(10)}, 10s};
  for (int i = 0; i < 100; ++i) {
    keep_alives.pieces.push_back(": keep-alive\n\n");
  }
  transport_->streams.push_back(std::move(keep_alives));
  const auto start = time_.now;
  const auto h = follow(c, 10, 60s);
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, errc::timeout);
  EXPECT_EQ(h.error().message, "host " + k_id + " did not become active in time");
  EXPECT_LE(time_.now - start, 60s);
  EXPECT_EQ(transport_->pieces_taken[0], 6U);
  // The transport is told the deadline too, for a stream that would rather stay silent.
  EXPECT_EQ(transport_->streamed[0].stream_limit, 60s);
  EXPECT_LE(transport_->streamed[0].timeout, 45s);
  EXPECT_EQ(host_gets(), 0U);
}

TEST_F(FollowCreate, SilentStreamCutAtTheDeadlineIsATimeoutNotAPoll) {
  auto c = make();
  transport_->streams.push_back(stream_answer{make_error(errc::unavailable, "timed out"),
                                              {opening(10), event(11, "created", "provisioning")},
                                              0ms,
                                              30s});
  const auto h = follow(c, 10, 30s);
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, errc::timeout);
  EXPECT_NE(h.error().message.find("(still provisioning)"), std::string::npos);
  EXPECT_EQ(host_gets(), 0U);
}

TEST_F(FollowCreate, PollingAfterAFailedStreamKeepsTheSameDeadline) {
  auto c = make();
  transport_->streams.push_back(
      stream_answer{make_error(errc::unavailable, "refused"), {}, 0ms, 50s});
  for (int i = 0; i < 100; ++i) {
    transport_->answers.emplace_back(host_answer(host_status::bootstrapping));
  }
  const auto start = time_.now;
  const auto h = follow(c, 10, 60s);
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, errc::timeout);
  EXPECT_LE(time_.now - start, 60s);
}

TEST_F(FollowCreate, ErrorEventEndsWithTheHostsOwnLastError) {
  auto c = make();
  transport_->streams.push_back(stream_answer{response(200),
                                              {opening(10), event(11, "created", "provisioning"),
                                               event(12, "died", "error", "VMCrashed: short")}});
  transport_->answers.emplace_back(
      host_answer(host_status::error, "VMCrashed: guest panicked (console tail)"));
  const auto h = follow(c, 10);
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, errc::provisioning_failed);
  EXPECT_EQ(h.error().message, "VMCrashed: guest panicked (console tail)");
  EXPECT_EQ(drawn_, (std::vector<host_status>{host_status::provisioning, host_status::error}));
}

TEST_F(FollowCreate, ErrorEventOfAHostAlreadyGoneUsesTheEventsLastError) {
  auto c = make();
  transport_->streams.push_back(
      stream_answer{response(200), {event(12, "status", "error", "ImageNotFound: x")}});
  transport_->answers.emplace_back(
      response(404, R"({"detail":"host not found","error_code":"NOT_FOUND"})"));
  const auto h = follow(c, 10);
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, errc::provisioning_failed);
  EXPECT_EQ(h.error().message, "ImageNotFound: x");
}

TEST_F(FollowCreate, DeletedMeanwhileIsAConflict) {
  auto c = make();
  transport_->streams.push_back(stream_answer{
      response(200), {event(11, "created", "provisioning"), event(12, "deleted", "deleting")}});
  transport_->answers.emplace_back(
      response(404, R"({"detail":"host not found","error_code":"NOT_FOUND"})"));
  const auto h = follow(c, 10);
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, errc::conflict);
  EXPECT_EQ(h.error().message, "host " + k_id + " was deleted before it became active");
}

TEST_F(FollowCreate, ActiveEventButTheHostFailedSinceReportsTheFailure) {
  auto c = make();
  transport_->streams.push_back(stream_answer{response(200), {event(15, "status", "active")}});
  transport_->answers.emplace_back(host_answer(host_status::error, "VMStopped: powered off"));
  const auto h = follow(c, 10);
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, errc::provisioning_failed);
  EXPECT_EQ(h.error().message, "VMStopped: powered off");
}

TEST_F(FollowCreate, AReplayThatAlreadyEndedNeedsNoRequest) {
  auto c = make();
  const auto failed = c.follow_create(sample_host(host_status::error, "BootTimeout: 2 s"), 10, 60s);
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code, errc::provisioning_failed);
  EXPECT_EQ(failed.error().message, "BootTimeout: 2 s");
  const auto active = c.follow_create(sample_host(host_status::active), 10, 60s);
  ASSERT_TRUE(active);
  EXPECT_TRUE(transport_->streamed.empty());
  EXPECT_TRUE(transport_->seen.empty());
}

TEST_F(FollowCreate, NewestEventIdIsTheStreamsOpeningIdAndClosesIt) {
  auto c = make();
  transport_->streams.push_back(
      stream_answer{response(200), {opening(42), event(43, "created", "provisioning")}});
  const auto id = c.newest_event_id();
  ASSERT_TRUE(id) << id.error().message;
  EXPECT_EQ(*id, 42);
  EXPECT_EQ(transport_->pieces_taken[0], 1U);
  EXPECT_EQ(transport_->streamed[0].url, "http://svc/events");
  EXPECT_EQ(header(transport_->streamed[0], "Last-Event-ID"), "");
  EXPECT_EQ(transport_->streamed[0].stream_limit, 30s);
}

TEST_F(FollowCreate, NewestEventIdOfAServerWithoutStreamsIsAnError) {
  auto c = make();
  transport_->streams.push_back(stream_answer{response(405, ""), {}});
  auto id = c.newest_event_id();
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().code, errc::api_error);
  transport_->streams.push_back(stream_answer{response(200), {": nothing\n\n"}});
  id = c.newest_event_id();
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().code, errc::bad_response);
}

TEST_F(FollowCreate, FollowEventsEndsWithTheServersErrorAfterDeliveringWhatCameBefore) {
  auto c = make();
  transport_->streams.push_back(stream_answer{
      response(200),
      {opening(10) + event(11, "created", "provisioning") +
       "event: error\ndata: {\"detail\": \"event history no longer available\"}\n\n"}});
  std::vector<std::int64_t> seen;
  const auto r = c.follow_events(k_id, 10, [&](const host_event& e) {
    seen.push_back(e.id);
    return true;
  });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::api_error);
  EXPECT_EQ(r.error().message, "event history no longer available");
  EXPECT_EQ(seen, (std::vector<std::int64_t>{11}));
  EXPECT_EQ(transport_->streamed.size(), 1U);  // not resumed: it would hear the same again
}

}  // namespace
}  // namespace litterbox::client::test
