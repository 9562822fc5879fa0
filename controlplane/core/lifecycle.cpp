#include "controlplane/core/lifecycle.hpp"

#include "controlplane/core/errc.hpp"
#include "hypervisor/errc.hpp"

namespace litterbox::controlplane {

using schema::host_status;

const std::vector<host_status>& provisioning_states() {
  static const std::vector<host_status> states{host_status::provisioning,
                                               host_status::pulling_image, host_status::creating_vm,
                                               host_status::bootstrapping};
  return states;
}

std::string last_error_text(const error& e) {
  std::string_view kind = hypervisor::kind_name(e.code);
  if (e.code == errc::capacity) {
    kind = "NoCapacity";
  } else if (e.code == errc::unavailable || e.code == errc::outcome_unknown) {
    kind = "DatabaseUnavailable";
  } else if (e.code == errc::internal && e.code.category() == category()) {
    kind = "InternalError";
  }
  return std::string(kind) + ": " + e.message;
}

host_patch failure_patch(std::string last_error, bool vm_released) {
  host_patch patch;
  patch.status = host_status::error;
  patch.last_error = std::move(last_error);
  patch.release_idempotency_key = true;
  patch.release_port = vm_released;
  patch.clear_owner = true;
  patch.clear_lease = true;
  return patch;
}

}  // namespace litterbox::controlplane
