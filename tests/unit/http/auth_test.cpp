#include "controlplane/http/auth.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace litterbox::controlplane::http {
namespace {

const std::vector<std::string> k_tokens{"alpha-token", "beta-token"};

TEST(CheckBearer, AcceptsEveryConfiguredToken) {
  EXPECT_EQ(check_bearer("Bearer alpha-token", k_tokens), auth_outcome::ok);
  EXPECT_EQ(check_bearer("Bearer beta-token", k_tokens), auth_outcome::ok);
  EXPECT_EQ(check_bearer("bearer beta-token", k_tokens), auth_outcome::ok);
}

TEST(CheckBearer, MissingEmptyOrOtherSchemeIsMissing) {
  EXPECT_EQ(check_bearer("", k_tokens), auth_outcome::missing);
  EXPECT_EQ(check_bearer("   ", k_tokens), auth_outcome::missing);
  EXPECT_EQ(check_bearer("Bearer", k_tokens), auth_outcome::missing);
  EXPECT_EQ(check_bearer("Bearer   ", k_tokens), auth_outcome::missing);
  EXPECT_EQ(check_bearer("Basic YWxhZGRpbjpvcGVuc2VzYW1l", k_tokens), auth_outcome::missing);
  EXPECT_EQ(check_bearer("Beareralpha-token", k_tokens), auth_outcome::missing);
}

TEST(CheckBearer, UnknownTokensOfAnyLengthOrBytesAreRejected) {
  EXPECT_EQ(check_bearer("Bearer alpha", k_tokens), auth_outcome::rejected);
  EXPECT_EQ(check_bearer("Bearer alpha-token-and-more", k_tokens), auth_outcome::rejected);
  EXPECT_EQ(check_bearer("Bearer " + std::string(100000, 'x'), k_tokens), auth_outcome::rejected);
  EXPECT_EQ(check_bearer(std::string("Bearer \xff\xfe\x00z", 11), k_tokens),
            auth_outcome::rejected);
  EXPECT_EQ(check_bearer("Bearer h\xc3\xa9llo", k_tokens), auth_outcome::rejected);
}

TEST(CheckBearer, NoConfiguredTokensRejectsEverything) {
  EXPECT_EQ(check_bearer("Bearer alpha-token", {}), auth_outcome::rejected);
}

}  // namespace
}  // namespace litterbox::controlplane::http
