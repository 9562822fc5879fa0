#include "client/client.hpp"
#include "client/errc.hpp"

#include <gtest/gtest.h>

#include <string>

namespace litterbox::client {
namespace {

constexpr std::string_view k_stream =
    ": stream open\nid: 6\n\n"
    "id: 7\ndata: {\"id\":7,\"at\":\"2026-12-02T01:02:03Z\",\"host_id\":\"h\",\"type\":\"status\","
    "\"status\":\"active\",\"last_error\":\"\"}\n\n"
    ": keep-alive\n\n"
    "id: 8\ndata: {\"id\":8,\"at\":\"2026-12-02T01:02:04Z\",\"host_id\":\"h\",\"type\":\"died\","
    "\"status\":\"error\",\"last_error\":\"VMGone: x\"}\n\n";

TEST(SseParser, EventsSplitAnywhereComeOutWholeInOrderAndCommentsAreSkipped) {
  for (std::size_t piece = 1; piece <= k_stream.size(); ++piece) {
    sse_parser p;
    std::vector<host_event> got;
    for (std::size_t at = 0; at < k_stream.size(); at += piece) {
      auto events = p.feed(k_stream.substr(at, piece));
      ASSERT_TRUE(events.has_value()) << events.error().message;
      got.insert(got.end(), events->begin(), events->end());
    }
    ASSERT_EQ(got.size(), 2U) << "piece size " << piece;
    EXPECT_EQ(got[0].id, 7);
    EXPECT_EQ(got[0].status, "active");
    EXPECT_EQ(got[1].type, "died");
    EXPECT_EQ(got[1].last_error, "VMGone: x");
    EXPECT_EQ(p.last_id(), 8);
  }
}

TEST(SseParser, AnIdWithoutDataMovesTheResumePointWithoutAnEvent) {
  sse_parser p;
  const auto events = p.feed(": stream open\nid: 41\n\n");
  ASSERT_TRUE(events.has_value());
  EXPECT_TRUE(events->empty());
  EXPECT_EQ(p.last_id(), 41);
}

TEST(SseParser, DataThatIsNoEventIsABadResponse) {
  sse_parser p;
  const auto events = p.feed("id: 1\ndata: [1, 2]\n\n");
  ASSERT_FALSE(events.has_value());
  EXPECT_EQ(events.error().code, errc::bad_response);
}

TEST(SseParser, AnErrorEventEndsWithTheServersDetailNotAsMalformed) {
  // What litterboxd sends when retention pruned past a lagging stream (API.md "Events").
  sse_parser p;
  const auto events = p.feed(
      "id: 5\ndata: {\"id\":5,\"at\":\"t\",\"host_id\":\"h\",\"type\":\"status\","
      "\"status\":\"active\",\"last_error\":\"\"}\n\n"
      "event: error\ndata: {\"detail\": \"event history no longer available\"}\n\n");
  ASSERT_TRUE(events.has_value()) << events.error().message;
  ASSERT_EQ(events->size(), 1U);  // what came before the error is still delivered
  EXPECT_EQ((*events)[0].id, 5);
  ASSERT_TRUE(p.ended());
  EXPECT_EQ(p.ended()->code, errc::api_error);
  EXPECT_EQ(p.ended()->message, "event history no longer available");
  EXPECT_EQ(p.last_id(), 5);
  const auto after = p.feed("id: 6\ndata: {\"id\":6}\n\n");
  ASSERT_TRUE(after.has_value());
  EXPECT_TRUE(after->empty());
}

}  // namespace
}  // namespace litterbox::client
