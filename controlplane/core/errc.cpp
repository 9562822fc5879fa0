#include "controlplane/core/errc.hpp"

#include <string>

namespace litterbox::controlplane {
namespace {

class category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "litterbox.controlplane"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::validation:
        return "validation failed";
      case errc::bad_request:
        return "bad request";
      case errc::not_found:
        return "host not found";
      case errc::host_state:
        return "the host's state forbids the operation";
      case errc::idempotency_mismatch:
        return "Idempotency-Key was already used with a different request";
      case errc::quota:
        return "quota exceeded";
      case errc::provisioning_failed:
        return "provisioning failed";
      case errc::unavailable:
        return "service unavailable";
      case errc::outcome_unknown:
        return "database unavailable: commit outcome unknown";
      case errc::capacity:
        return "no capacity left";
      case errc::teardown_failed:
        return "teardown failed";
      case errc::internal:
        return "internal error";
      case errc::history_gone:
        return "event history no longer available";
    }
    return "unknown control plane error";
  }
};

}  // namespace

const std::error_category& category() {
  static const category_impl instance;
  return instance;
}

}  // namespace litterbox::controlplane
