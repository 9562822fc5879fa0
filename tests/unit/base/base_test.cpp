#include "base/secret.hpp"
#include "base/time.hpp"
#include "base/uuid.hpp"

#include <gtest/gtest.h>

#include <set>

namespace litterbox {
namespace {

TEST(Rfc3339, FormatsUtcWithMicrosecondsAndZ) {
  const timestamp t = timestamp(std::chrono::microseconds(1'795'780'800'123'456));
  EXPECT_EQ(format_rfc3339(t), "2026-11-27T12:00:00.123456Z");  // date -u -d @1795780800
}

TEST(Rfc3339, ParsesZuluAndOffsetsToTheSameInstant) {
  const auto z = parse_rfc3339("2026-11-22T10:00:00Z");
  const auto plus = parse_rfc3339("2026-11-22T12:00:00+02:00");
  const auto minus = parse_rfc3339("2026-11-22T05:30:00-0430");
  ASSERT_TRUE(z && plus && minus);
  EXPECT_EQ(*z, *plus);
  EXPECT_EQ(*z, *minus);
  EXPECT_EQ(format_rfc3339(*parse_rfc3339("2026-11-22T10:00:00.5Z")),
            "2026-11-22T10:00:00.500000Z");
  EXPECT_EQ(format_rfc3339(*parse_rfc3339("2026-11-22T10:00:00.123456789Z")),
            "2026-11-22T10:00:00.123456Z");
}

TEST(Rfc3339, RejectsTimesWithoutAZoneAndMalformedText) {
  for (const char* bad :
       {"2026-11-22T10:00:00", "2026-11-22", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z",
        "2026-11-22T25:00:00Z", "yesterday", "", "2026-11-22T10:00:00Zjunk",
        "2026-11-22T10:00:00+2:00", "2026-11-22T10:00:00."}) {
    EXPECT_FALSE(parse_rfc3339(bad)) << bad;
  }
}

TEST(Uuid, V7IdsAreVersionedOrderedAndUnique) {
  std::set<std::string> seen;
  std::string previous;
  for (int i = 0; i < 1000; ++i) {
    const auto id = new_uuid_v7(timestamp(std::chrono::milliseconds(1'800'000'000'000 + i)));
    ASSERT_EQ(id.size(), 36U);
    EXPECT_EQ(id[14], '7');
    EXPECT_NE(std::string("89ab").find(id[19]), std::string::npos);
    EXPECT_GT(id, previous);
    previous = id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000U);
}

TEST(Uuid, ParseCanonicalisesCaseAndRejectsEverythingElse) {
  EXPECT_EQ(parse_uuid("0192F3A4-0000-7000-8000-00000000ABCD"),
            "0192f3a4-0000-7000-8000-00000000abcd");
  for (const char* bad :
       {"", "0192f3a4000070008000000000000abcd", "0192f3a4-0000-7000-8000-00000000abcg",
        "{0192f3a4-0000-7000-8000-00000000abcd}", "../../etc/passwd"}) {
    EXPECT_FALSE(parse_uuid(bad)) << bad;
  }
}

TEST(Secret, ConstantTimeEqualComparesContentAndLength) {
  EXPECT_TRUE(constant_time_equal("token", "token"));
  EXPECT_FALSE(constant_time_equal("token", "tokeN"));
  EXPECT_FALSE(constant_time_equal("token", "token2"));
  EXPECT_TRUE(constant_time_equal("", ""));
}

TEST(Secret, RandomHexHasTheRequestedLengthAndVaries) {
  EXPECT_EQ(random_hex(16).size(), 32U);
  EXPECT_NE(random_hex(16), random_hex(16));
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Secret, HmacSha256MatchesRfc4231TestCase2) {
  EXPECT_EQ(hmac_sha256_hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_NE(hmac_sha256_hex("key-a", "body"), hmac_sha256_hex("key-b", "body"));
}

}  // namespace
}  // namespace litterbox
