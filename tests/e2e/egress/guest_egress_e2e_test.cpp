#include "tests/e2e/clones/cloned_guests.hpp"
#include "tests/e2e/egress/link_local_peer.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <unistd.h>
#include <utility>
#include <vector>

// What a real guest can reach, through a real litterboxd: a listener on a link-local address
// that the test puts in a network namespace of its own, behind a veth pair, is out of reach
// by default and reachable once LITTERBOX_GUEST_EGRESS allows exactly that address; this
// host's own addresses stay out of reach whatever is allowed. Public egress is not tested
// (no internet here). The firewall is the host's, the same for a clone as for a cold boot: the
// guest is a clone from the shared service of tests/e2e/clones, which allows the peer (made
// before that service starts). Needs root, libvirtd and the loopback registry scripts/test
// prepares.
namespace litterbox::e2e_test {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

/// One line per probe, "<label> OPEN" or "<label> CLOSED", from inside the guest: a TCP
/// connect through bash's /dev/tcp bounded by 10 s, all probes at once.
std::string probe_script(const std::vector<std::pair<std::string, std::string>>& targets) {
  std::string script;
  for (const auto& [label, address] : targets) {
    script += "(if timeout 10 bash -c 'exec 3<>/dev/tcp/" + address + "' 2>/dev/null; then echo '" +
              label + " OPEN'; else echo '" + label + " CLOSED'; fi) & ";
  }
  return script + "wait";
}

TEST(GuestEgress, LinkLocalPeerIsReachableOnlyWhereAllowedAndThisHostNeverIs) {
  e2e_service* service = nullptr;
  ASSERT_NO_THROW(service = &cloned_guest_service());
  const link_local_peer& peer = cloned_guest_egress_peer();
  const auto own = host_address();
  ASSERT_TRUE(own) << "this host has no non-loopback IPv4 address to probe";
  const int on_host_address = listen_on(*own);
  const int on_loopback = listen_on("127.0.0.1");

  {
    SCOPED_TRACE("/doctor reports the firewall in force");
    const auto r = service->http().get("/doctor", e2e_service::auth());
    const json doctor = body_json(r);
    bool found = false;
    for (const auto& c : doctor.value("checks", json::array())) {
      if (c.value("name", "") == "guest_isolation") {
        found = true;
        EXPECT_EQ(c.value("status", ""), "ok") << c.dump();
      }
    }
    EXPECT_TRUE(found) << r;
  }

  const temp_dir work("lb-e2e-egress");
  const auto created = service->create(json::object());
  ASSERT_EQ(created.status, 201) << created << "\nlitterboxd:\n"
                                 << service->process().output_tail();
  EXPECT_EQ(create_path(created), "clone");
  const json host = body_json(created);
  ASSERT_TRUE(host.contains("private_key")) << host.dump();
  const auto login = make_ssh_login(host, work.path(), host["private_key"].get<std::string>());

  const auto r = ssh_run(
      login,
      probe_script(
          {{"own-sshd", "127.0.0.1/22"},
           {"allowed-link-local", peer.allowed() + "/" + std::to_string(peer.allowed_port())},
           {"denied-link-local", peer.denied() + "/" + std::to_string(peer.denied_port())},
           {"host-address", *own + "/" + std::to_string(port_of(on_host_address))},
           {"host-loopback", "10.0.2.2/" + std::to_string(port_of(on_loopback))}}));
  ASSERT_EQ(r.exit_code, 0) << r;
  // The first two lines prove that the probe works and that the peer is reachable at all,
  // so the CLOSED lines are the firewall's doing.
  EXPECT_NE(r.out.find("own-sshd OPEN\n"), std::string::npos) << r;
  EXPECT_NE(r.out.find("allowed-link-local OPEN\n"), std::string::npos) << r;
  EXPECT_NE(r.out.find("denied-link-local CLOSED\n"), std::string::npos) << r;
  EXPECT_NE(r.out.find("host-address CLOSED\n"), std::string::npos) << r;
  EXPECT_NE(r.out.find("host-loopback CLOSED\n"), std::string::npos) << r;

  const auto removed = service->remove(host.value("id", ""));
  EXPECT_EQ(removed.status, 204) << removed;
  EXPECT_TRUE(leftovers(*service, host).empty());
  ::close(on_host_address);
  ::close(on_loopback);
}

}  // namespace
}  // namespace litterbox::e2e_test
