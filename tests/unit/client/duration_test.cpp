#include "client/duration.hpp"

#include <gtest/gtest.h>

namespace litterbox::client {
namespace {

using namespace std::chrono_literals;

TEST(Duration, ParsesSingleUnits) {
  EXPECT_EQ(parse_duration("45s"), 45s);
  EXPECT_EQ(parse_duration("90m"), 90min);
  EXPECT_EQ(parse_duration("2h"), 2h);
  EXPECT_EQ(parse_duration("7d"), 7 * 24h);
  EXPECT_EQ(parse_duration("1w"), 7 * 24h);
}

TEST(Duration, BareNumberIsSeconds) {
  EXPECT_EQ(parse_duration("3600"), 3600s);
}

TEST(Duration, CombinesUnits) {
  EXPECT_EQ(parse_duration("1h30m"), 90min);
  EXPECT_EQ(parse_duration("1d2h3m4s"), 24h + 2h + 3min + 4s);
}

TEST(Duration, RejectsMalformedZeroAndHuge) {
  for (const char* bad : {"", "h", "2x", "-2h", "2 h", "1h30", "0", "0h", "2.5h", "h2",
                          "99999999999999999999s", "3661d"}) {
    EXPECT_FALSE(parse_duration(bad)) << bad;
  }
}

}  // namespace
}  // namespace litterbox::client
