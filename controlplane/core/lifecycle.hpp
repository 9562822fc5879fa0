#pragma once

#include "base/result.hpp"
#include "controlplane/core/store.hpp"
#include "schema/host.hpp"

#include <string>
#include <vector>

namespace litterbox::controlplane {

/// The statuses of a host that is still being created.
const std::vector<schema::host_status>& provisioning_states();

/// "<Kind>: <message>" for last_error (API.md), from any module's error.
std::string last_error_text(const error& e);

/// The row change that ends a create in `error`: the key is released at once so a retry can
/// start afresh, and the host no longer has an owner or an activation lease. The port is
/// released only when `vm_released`: while QEMU may still hold it, no other host may get it.
host_patch failure_patch(std::string last_error, bool vm_released);

}  // namespace litterbox::controlplane
