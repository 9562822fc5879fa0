#include "controlplane/http/auth.hpp"

#include <gtest/gtest.h>

#include <string>

namespace litterbox::controlplane::http {
namespace {

TEST(BearerToken, TheSchemeIsCaseInsensitiveAndTheTokenIsTrimmed) {
  EXPECT_EQ(bearer_token("Bearer alpha-token"), "alpha-token");
  EXPECT_EQ(bearer_token("bearer beta-token"), "beta-token");
  EXPECT_EQ(bearer_token("  BEARER \t gamma  "), "gamma");
}

TEST(BearerToken, MissingEmptyOrOtherSchemeIsNoToken) {
  EXPECT_FALSE(bearer_token(""));
  EXPECT_FALSE(bearer_token("   "));
  EXPECT_FALSE(bearer_token("Bearer"));
  EXPECT_FALSE(bearer_token("Bearer   "));
  EXPECT_FALSE(bearer_token("Basic YWxhZGRpbjpvcGVuc2VzYW1l"));
  EXPECT_FALSE(bearer_token("Beareralpha-token"));
}

TEST(BearerToken, AnyBytesAfterTheSchemeAreTheToken) {
  const std::string binary("Bearer \xff\xfe\x00z", 11);
  EXPECT_EQ(bearer_token(binary), std::string_view(binary).substr(7));
  EXPECT_EQ(bearer_token("Bearer " + std::string(100000, 'x'))->size(), 100000U);
}

}  // namespace
}  // namespace litterbox::controlplane::http
