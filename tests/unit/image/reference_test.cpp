#include "hypervisor/image/reference.hpp"

#include "hypervisor/errc.hpp"
#include "hypervisor/image/registry.hpp"

#include <gtest/gtest.h>

namespace litterbox::hypervisor::image {
namespace {

const std::string k_digest = "sha256:" + std::string(64, 'a');

TEST(ParseReference, BareNameGoesToDockerHubLibraryWithLatest) {
  auto r = parse_reference("alpine", "docker.io");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->registry, "docker.io");
  EXPECT_EQ(r->repository, "library/alpine");
  EXPECT_EQ(r->tag, "latest");
  EXPECT_EQ(r->docker_transport(), "docker://docker.io/library/alpine:latest");
}

TEST(ParseReference, RegistryWithPortAndNestedRepository) {
  auto r = parse_reference("127.0.0.1:5000/litterbox/debian:12", "docker.io");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->registry, "127.0.0.1:5000");
  EXPECT_EQ(r->repository, "litterbox/debian");
  EXPECT_EQ(r->tag, "12");
}

TEST(ParseReference, DigestPinnedReferenceKeepsTheDigest) {
  auto r = parse_reference("ghcr.io/org/img:1.0@" + k_digest, "docker.io");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->tag, "1.0");
  EXPECT_EQ(r->digest, k_digest);
  EXPECT_EQ(r->docker_transport(), "docker://ghcr.io/org/img@" + k_digest);
}

TEST(ParseReference, NonDockerDefaultRegistryGetsNoLibraryPrefix) {
  auto r = parse_reference("team/tool", "registry.example:443");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->registry, "registry.example:443");
  EXPECT_EQ(r->repository, "team/tool");
}

TEST(ParseReference, RejectsShellMetacharactersUppercaseAndBadDigests) {
  for (const char* bad : {"", "alpine;rm -rf /", "Alpine", "a//b", "alpine:", "alpine@sha256:1",
                          "alpine@md5:"
                          "0123",
                          "-rf", "alpine:$(x)", "a b"}) {
    auto r = parse_reference(bad, "docker.io");
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().code, errc::image_not_found) << bad;
    }
  }
}

TEST(ParseReference, RegistryThatStartsLikeAnOptionIsRejected) {
  EXPECT_FALSE(parse_reference("-x.io/repo:1", "docker.io"));
  EXPECT_FALSE(parse_reference(".x.io/repo:1", "docker.io"));
  EXPECT_TRUE(parse_reference("[::1]:5000/repo:1", "docker.io"));
}

TEST(ClassifySkopeoFailure, MapsEachFailureToItsKindWithoutDumpingOutput) {
  const auto unknown = classify_skopeo_failure(
      "r/x:1", "time=... level=fatal msg=\"reading manifest 1: manifest unknown\"", false);
  EXPECT_EQ(unknown.code, errc::image_not_found);
  EXPECT_EQ(unknown.message.find("level=fatal"), std::string::npos);
  EXPECT_EQ(
      classify_skopeo_failure("r", "dial tcp 127.0.0.1:5: connect: connection refused", false).code,
      errc::registry_unavailable);
  EXPECT_EQ(classify_skopeo_failure("r", "Digest did not match, expected sha256:…", false).code,
            errc::image_corrupt);
  EXPECT_EQ(classify_skopeo_failure("r", "", true).code, errc::registry_unavailable);
}

}  // namespace
}  // namespace litterbox::hypervisor::image
