#pragma once

#include <system_error>

namespace litterbox::schema {

/// Errors of the wire layer: input that does not match the contract.
enum class errc {
  invalid_json = 1,  ///< the body is not JSON or not the expected shape
  invalid_field,     ///< a field has the wrong type or a value outside its domain
};

const std::error_category& category();
inline std::error_code make_error_code(errc e) {
  return {static_cast<int>(e), category()};
}

}  // namespace litterbox::schema

template <>
struct std::is_error_code_enum<litterbox::schema::errc> : std::true_type {};
