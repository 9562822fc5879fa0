#pragma once

#include <string_view>

namespace litterbox {

enum class log_format { text, json };

/// Configures the default spdlog logger: level by name (trace…critical) and format. In JSON
/// mode every line is one object {"ts","level","msg"}; messages are escaped.
void setup_logging(std::string_view level, log_format format);

}  // namespace litterbox
