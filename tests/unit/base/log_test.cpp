#include "base/log.hpp"

#include <gtest/gtest.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/ostream_sink.h>

#include <algorithm>
#include <memory>
#include <sstream>

namespace litterbox {
namespace {

TEST(LogEscape, KeepsPrintableTextAsItIs) {
  EXPECT_EQ(log_escape("GET /hosts/0190 ünïcode {}"), "GET /hosts/0190 ünïcode {}");
  EXPECT_EQ(log_escape(""), "");
}

TEST(LogEscape, MakesControlCharactersAndBackslashesVisible) {
  EXPECT_EQ(log_escape("a\nb\rc\td"), "a\\nb\\rc\\td");
  EXPECT_EQ(log_escape(std::string("nul\0esc\x1b[31m del\x7f", 17)),
            "nul\\x00esc\\x1b[31m del\\x7f");
  EXPECT_EQ(log_escape("back\\slash\\n"), "back\\\\slash\\\\n");
}

TEST(LogEscape, GuestTextWithANewlineLogsAsOneLine) {
  std::ostringstream captured;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(captured);
  spdlog::logger logger("log-escape-test", sink);
  logger.set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %l %v");
  const std::string console = "booting\n2026-12-01T22:00:00.000000Z info forged: host deleted";
  logger.info("console tail: {}", log_escape(console));
  logger.flush();
  const std::string text = captured.str();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
  EXPECT_NE(text.find("booting\\n2026-12-01T22:00:00.000000Z info forged"), std::string::npos)
      << text;
}

}  // namespace
}  // namespace litterbox
