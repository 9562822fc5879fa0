#pragma once

#include "tests/e2e/api/e2e_support.hpp"
#include "tests/e2e/egress/link_local_peer.hpp"

#include <string>

// One litterboxd shared by every test of a binary whose tests need only *a* guest: templates
// on, on its own database, state directory and owner tag, with the template of the default
// image and size built once before the first test (a GoogleTest environment does it), so
// that each test's create is a clone of it instead of a minute-long cold boot. The binary's
// tests run in one process, one after another; each deletes what it made. Cold boots stay
// covered by the suites that keep booting (LibvirtDriverE2e, RealGuests).
namespace litterbox::e2e_test {

/// The shared service: `--templates on`, `--reconcile-interval 600` (deaths must be found by
/// libvirt's lifecycle events and the start-up check, not by the periodic pass),
/// `--reap-interval 86400` (the in-process reaper stays out of the way of `litterboxd reap`)
/// and `--guest-egress allow=<cloned_guest_egress_peer().allowed()>/32` (the guest egress test).
/// Its template is ready. Throws std::runtime_error with the reason when setting it up failed
/// (every test then fails with that reason).
e2e_service& cloned_guest_service();

/// The link-local peer in a network namespace of this run whose `allowed()` address the shared
/// service's egress firewall lets guests reach. Throws std::runtime_error when there is none.
const link_local_peer& cloned_guest_egress_peer();

/// The X-Litterbox-Create-Path of a 201 ("" when it has none).
std::string create_path(const test::http_response& r);

/// The create path the row of host `id` records ("clone", "boot", "pool"; "" when the row
/// has none or does not exist), read from the service's database.
std::string recorded_create_path(const e2e_service& service, const std::string& id);

}  // namespace litterbox::e2e_test
