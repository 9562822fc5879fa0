#include "cloud-init/yaml.hpp"

#include <gtest/gtest.h>

namespace litterbox::cloudinit {
namespace {

TEST(YamlQuote, WrapsPlainTextInDoubleQuotes) {
  EXPECT_EQ(yaml_quote("agent"), "\"agent\"");
}

TEST(YamlQuote, EscapesQuotesAndBackslashes) {
  EXPECT_EQ(yaml_quote(R"(a"b\c)"), R"("a\"b\\c")");
}

TEST(YamlQuote, LeavesYamlIndicatorsInertInsideQuotes) {
  EXPECT_EQ(yaml_quote("#cloud-config"), "\"#cloud-config\"");
  EXPECT_EQ(yaml_quote("{{ x }}"), "\"{{ x }}\"");
  EXPECT_EQ(yaml_quote("- [a]: &b *c !d |e >f"), "\"- [a]: &b *c !d |e >f\"");
  EXPECT_EQ(yaml_quote("'; touch /tmp/pwned #"), "\"'; touch /tmp/pwned #\"");
}

TEST(YamlQuote, EscapesControlCharactersSoTheScalarStaysOneLine) {
  EXPECT_EQ(yaml_quote(std::string("a\nb\rc\td\x01\x7f", 9)), R"("a\nb\rc\td\x01\x7F")");
  EXPECT_EQ(yaml_quote(std::string("\0", 1)), R"("\x00")");
}

TEST(YamlQuote, KeepsValidUtf8AndEscapesUnicodeLineBreaks) {
  EXPECT_EQ(yaml_quote("grüße ✓ 😀"), "\"grüße ✓ 😀\"");
  EXPECT_EQ(yaml_quote("a\u2028b\u2029c\u0085d\uFEFF"), R"("a\u2028b\u2029c\u0085d\uFEFF")");
}

TEST(YamlQuote, ReplacesInvalidUtf8Bytes) {
  EXPECT_EQ(yaml_quote("a\xff"
                       "b"),
            R"("a\uFFFDb")");
  EXPECT_EQ(yaml_quote("\xc3"), R"("\uFFFD")");                      // truncated sequence
  EXPECT_EQ(yaml_quote("\xc0\xaf"), R"("\uFFFD\uFFFD")");            // overlong '/'
  EXPECT_EQ(yaml_quote("\xed\xa0\x80"), R"("\uFFFD\uFFFD\uFFFD")");  // surrogate
}

TEST(Base64, EncodesRfc4648Vectors) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foob"), "Zm9vYg==");
  EXPECT_EQ(base64_encode("fooba"), "Zm9vYmE=");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
}

TEST(Base64, RoundTripsEveryByteValue) {
  std::string all;
  for (int i = 0; i < 256; ++i) {
    all += static_cast<char>(i);
  }
  for (std::size_t len = 0; len <= all.size(); len += 37) {
    std::string decoded;
    ASSERT_TRUE(base64_decode(base64_encode(all.substr(0, len)), decoded));
    EXPECT_EQ(decoded, all.substr(0, len));
  }
}

TEST(Base64, RejectsMalformedInput) {
  std::string out;
  EXPECT_FALSE(base64_decode("Zm9", out));
  EXPECT_FALSE(base64_decode("Zm9*", out));
  EXPECT_FALSE(base64_decode("Z=9v", out));
  EXPECT_FALSE(base64_decode("Zg==Zg==", out));
}

}  // namespace
}  // namespace litterbox::cloudinit
