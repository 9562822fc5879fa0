#include "tests/e2e/clones/cloned_guests.hpp"

#include "hypervisor/libvirt/domain_xml.hpp"
#include "tests/e2e/egress/link_local_peer.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <chrono>
#include <iostream>
#include <memory>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace litterbox::e2e_test {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

struct shared_service {
  std::unique_ptr<temp_dir> work;
  // The egress rules the service's --guest-egress allowance writes are the host's: they are
  // put back to the default policy once the service is gone (declared before it, so destroyed
  // after it), and the peer outlives the service too.
  std::unique_ptr<default_policy_restorer> restore_egress;
  std::unique_ptr<link_local_peer> egress_peer;
  std::unique_ptr<e2e_service> service;
  std::string error;  ///< why there is no service
};

shared_service& shared() {
  static shared_service s;
  return s;
}

/// The status and last_error of the service's template rows ("" and "" when there is none).
std::pair<std::string, std::string> template_state(const e2e_service& service) {
  pqxx::connection c(service.database_url());
  pqxx::nontransaction tx(c);
  const auto rows = tx.exec("SELECT status, last_error FROM templates ORDER BY created_at");
  if (rows.empty()) {
    return {"", ""};
  }
  return {rows[0][0].as<std::string>(), rows[0][1].as<std::string>()};
}

std::string describe(const test::http_response& r) {
  std::ostringstream s;
  s << r;
  return s.str();
}

/// Makes the template of the default image and size: an asynchronous create asks for it (a
/// create that finds no template boots and wants one), the create is ended and deleted as
/// soon as the build is under way, and the build is waited for.
/// Throws with the reason and litterboxd's output when it does not end ready.
void build_template(e2e_service& service) {
  const auto fail = [&](const std::string& why) {
    throw std::runtime_error(why + "\nlitterboxd:\n" + service.process().output_tail());
  };
  const auto created = service.http().post(
      "/hosts", "{}",
      e2e_service::auth({{"Content-Type", "application/json"}, {"Prefer", "respond-async"}}));
  if (created.status != 202 && created.status != 201) {
    fail("the create that asks for the template answered " + describe(created));
  }
  const std::string id = body_json(created).value("id", "");

  const auto wanted_by = steady::now() + 600s;
  while (template_state(service).first.empty()) {
    const json host = body_json(service.get(id));
    if (host.value("status", "") == "error") {
      fail("the create that asks for the template failed: " + host.dump());
    }
    if (steady::now() > wanted_by) {
      fail("no template build started within 600 s of a create: " + host.dump());
    }
    std::this_thread::sleep_for(200ms);  // polling, not timing
  }

  // The server refuses to delete a create before it settles (409 HOST_STATE), and the boot
  // would compete with the build for the CPU: once its domain exists it is destroyed, which
  // fails the create at once. Should that not work, the create settles by booting to the end.
  json last_seen = body_json(service.get(id));
  const auto domain_by = steady::now() + 600s;
  while (last_seen.value("status", "") != "bootstrapping" &&
         last_seen.value("status", "") != "active" && last_seen.value("status", "") != "error" &&
         steady::now() < domain_by) {
    std::this_thread::sleep_for(200ms);  // polling, not timing
    last_seen = body_json(service.get(id));
  }
  if (last_seen.value("status", "") == "bootstrapping") {
    (void)virsh({"destroy", last_seen.value("name", "")});
  }
  const auto deletable_by = steady::now() + 1200s;
  for (;;) {
    if (const auto r = service.get(id); r.status == 200) {
      last_seen = body_json(r);
    }
    const auto removed = service.remove(id);
    if (removed.status == 204) {
      break;
    }
    // 409 HOST_STATE: the create is in a step the server does not cancel; it ends soon.
    if (removed.status != 409 || steady::now() > deletable_by) {
      fail("deleting the create that asked for the template answered " + describe(removed));
    }
    std::this_thread::sleep_for(500ms);  // polling, not timing
  }
  if (!last_seen.contains("ssh_port") || !last_seen["ssh_port"].is_number()) {
    last_seen.erase("ssh_port");
  }
  if (const auto left = leftovers(service, last_seen); !left.empty()) {
    fail("the create that asked for the template left " + left.front());
  }

  const auto ready_by = steady::now() + 1500s;
  for (auto state = template_state(service); state.first != "ready";
       state = template_state(service)) {
    if (state.first == "failed") {
      fail("the template build failed: " + state.second);
    }
    if (steady::now() > ready_by) {
      fail("the template was not ready within 1500 s (status " + state.first + ")");
    }
    std::this_thread::sleep_for(500ms);  // polling, not timing
  }
}

/// Domains whose litterbox metadata names `owner`.
std::vector<std::string> owned_domains(const std::string& owner) {
  static const std::regex owner_re(R"(owner>([^<]*)<)");
  std::vector<std::string> out;
  for (const auto& name : libvirt_domains()) {
    const auto r = virsh({"metadata", name, std::string(hypervisor::k_metadata_ns)});
    std::smatch m;
    if (r.exit_code == 0 && std::regex_search(r.out, m, owner_re) && m[1].str() == owner) {
      out.push_back(name);
    }
  }
  return out;
}

class cloned_guests_environment final : public ::testing::Environment {
 public:
  void SetUp() override {
    const auto started = steady::now();
    auto& s = shared();
    try {
      s.work = std::make_unique<temp_dir>("lb-e2e-clones");
      s.restore_egress = std::make_unique<default_policy_restorer>();
      s.egress_peer = std::make_unique<link_local_peer>();
      s.service = std::make_unique<e2e_service>(
          std::vector<std::string>{"--templates", "on", "--reconcile-interval", "600",
                                   "--reap-interval", "86400", "--guest-egress",
                                   "allow=" + s.egress_peer->allowed() + "/32",
                                   "--http-proxy-allow", "127.0.0.1/32"},
          s.work->path() / "state");
      build_template(*s.service);
      std::cout << "[ setup    ] template ready in "
                << std::chrono::duration<double>(steady::now() - started).count() << " s"
                << std::endl;
    } catch (const std::exception& e) {
      s.error = e.what();
    }
  }

  void TearDown() override {
    auto& s = shared();
    if (s.service) {
      // Every test deletes what it made; a host still listed is a test's leak (or, when the
      // set-up failed, the set-up's own create).
      const auto r = s.service->http().get("/hosts?limit=1000", e2e_service::auth());
      const json list = body_json(r);
      EXPECT_EQ(r.status, 200) << r;
      for (const auto& h : list.is_array() ? list : json::array()) {
        if (s.error.empty()) {
          ADD_FAILURE() << "a test left host " << h.dump();
        }
        const auto removed = s.service->remove(h.value("id", ""));
        EXPECT_EQ(removed.status, 204) << removed;
      }
      const std::string owner = s.service->owner();
      s.service.reset();
      // A template guest of a build cut short by the stop is the only domain that may
      // remain; litterboxd's default owner tag is shared with other runs, so only an owner
      // tag of the service's own is swept.
      if (owner != "litterbox") {
        for (const auto& name : owned_domains(owner)) {
          virsh({"destroy", name});
          virsh({"undefine", name});
        }
      }
    }
    s.egress_peer.reset();
    s.restore_egress.reset();
    s.work.reset();
  }
};

// Registered before main() runs the tests (gtest_main); GoogleTest owns it.
[[maybe_unused]] ::testing::Environment* const k_environment =
    ::testing::AddGlobalTestEnvironment(new cloned_guests_environment);

}  // namespace

e2e_service& cloned_guest_service() {
  auto& s = shared();
  if (!s.service || !s.error.empty()) {
    throw std::runtime_error("no litterboxd with a ready template: " +
                             (s.error.empty() ? std::string("not set up") : s.error));
  }
  return *s.service;
}

const link_local_peer& cloned_guest_egress_peer() {
  auto& s = shared();
  if (!s.egress_peer) {
    throw std::runtime_error("no link-local peer: " +
                             (s.error.empty() ? std::string("not set up") : s.error));
  }
  return *s.egress_peer;
}

std::string create_path(const test::http_response& r) {
  return r.header("X-Litterbox-Create-Path").value_or("");
}

std::string recorded_create_path(const e2e_service& service, const std::string& id) {
  pqxx::connection c(service.database_url());
  pqxx::nontransaction tx(c);
  const auto rows =
      tx.exec_params("SELECT COALESCE(create_path, '') FROM hosts WHERE id::text = $1", id);
  return rows.empty() ? std::string() : rows[0][0].as<std::string>();
}

}  // namespace litterbox::e2e_test
