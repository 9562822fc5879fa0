#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace litterbox::controlplane::http {

/// The token of a Bearer Authorization value (`header`: the raw value, any bytes); nullopt
/// when it is empty or not the Bearer scheme (401). The view points into `header`.
std::optional<std::string_view> bearer_token(std::string_view header);

}  // namespace litterbox::controlplane::http
