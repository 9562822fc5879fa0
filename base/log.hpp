#pragma once

#include <string>
#include <string_view>

namespace litterbox {

enum class log_format { text, json };

/// Configures the default spdlog logger: level by name (trace…critical) and format. In JSON
/// mode every line is one object {"ts","level","msg"}; messages are escaped.
void setup_logging(std::string_view level, log_format format);

/// `text` made safe to put into a log line: every control character (newlines included) and
/// DEL becomes a visible escape (`\n`, `\r`, `\t`, `\xNN`) and a backslash becomes `\\`, so
/// caller- or guest-supplied text (request paths, methods, console output, database messages
/// quoting row values) can neither start a forged line nor hide part of one. Bytes >= 0x80
/// pass unchanged. Wrap every untrusted value with it at the log call. Thread-safe.
std::string log_escape(std::string_view text);

}  // namespace litterbox
