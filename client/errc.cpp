#include "client/errc.hpp"

#include <string>

namespace litterbox::client {
namespace {

class category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "litterbox.client"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::auth:
        return "authentication failed";
      case errc::not_found:
        return "not found";
      case errc::conflict:
        return "conflict";
      case errc::provisioning_failed:
        return "provisioning failed";
      case errc::unavailable:
        return "service unavailable";
      case errc::api_error:
        return "API error";
      case errc::bad_response:
        return "malformed response";
      case errc::timeout:
        return "timed out";
      case errc::invalid_argument:
        return "invalid argument";
      case errc::ssh:
        return "SSH failure";
      case errc::host_key_mismatch:
        return "host key mismatch";
      case errc::quota:
        return "quota or rate limit exceeded";
    }
    return "unknown client error";
  }
};

}  // namespace

const std::error_category& category() {
  static const category_impl instance;
  return instance;
}

}  // namespace litterbox::client
