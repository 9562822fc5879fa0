#pragma once

#include <boost/system/result.hpp>

#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace litterbox {

/// One problem with a caller's input: where (`loc`, e.g. {"body", "env"}), what (`msg`) and
/// its kind (`type`, e.g. "value_error", "missing", "int_type").
struct field_issue {
  std::vector<std::string> loc;
  std::string msg;
  std::string type = "value_error";
};

/// An expected failure: a module's error code plus a message that is safe to show a caller
/// (it never contains secrets). Each module defines its codes in its own `errc` enum.
/// Validation failures also list every problem found in `issues`.
struct error {
  std::error_code code;
  std::string message;
  std::vector<field_issue> issues;
};

/// The value-or-error return type of every fallible operation (STYLE.md: errors are values).
template <class T>
using result = boost::system::result<T, error>;

inline error make_error(std::error_code code, std::string message) {
  return error{code, std::move(message), {}};
}

/// Thrown by result<T>::value() on an error; only reachable through a programming mistake
/// or at a start-up boundary where throwing is allowed.
class error_exception : public std::system_error {
 public:
  explicit error_exception(const error& e) : std::system_error(e.code, e.message) {}
};

[[noreturn]] inline void throw_exception_from_error(const error& e,
                                                    const boost::source_location& /*loc*/) {
  throw error_exception(e);
}

}  // namespace litterbox
