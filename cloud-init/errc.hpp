#pragma once

#include <string_view>
#include <system_error>

namespace litterbox::cloudinit {

/// Failures of seed rendering and seed image building.
enum class errc {
  invalid_spec = 1,   ///< a field cannot be rendered safely (bad user name, token, key, env key)
  seed_build_failed,  ///< the seed image could not be written
};

const std::error_category& category();
inline std::error_code make_error_code(errc e) {
  return {static_cast<int>(e), category()};
}

}  // namespace litterbox::cloudinit

template <>
struct std::is_error_code_enum<litterbox::cloudinit::errc> : std::true_type {};
