#include "tests/e2e/api/e2e_support.hpp"
#include "tests/e2e/clones/cloned_guests.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>

// Issue 15: a guest whose QEMU dies behind litterbox's back must not stay `active`. Each case's
// guest is a clone from the shared service (tests/e2e/clones), which runs with a long
// reconcile interval: the lifecycle event or the start-up check, not the periodic pass, must
// find the death.

namespace litterbox::e2e_test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

#ifndef LB_LITTERBOX_CLI_PATH
#define LB_LITTERBOX_CLI_PATH ""
#endif

/// The pid libvirt recorded for the QEMU of domain `name` (0 when there is none).
pid_t qemu_pid(const std::string& name) {
  std::ifstream in("/run/libvirt/qemu/" + name + ".pid");
  long pid = 0;
  in >> pid;
  return static_cast<pid_t>(pid);
}

TEST(RealGuestDeath, AKilledQemuTurnsTheActiveHostIntoErrorWithinTenSecondsAndReleasesIt) {
  e2e_service* service = nullptr;
  ASSERT_NO_THROW(service = &cloned_guest_service());
  const auto created = service->create(json::object());
  ASSERT_EQ(created.status, 201) << created << "\nlitterboxd:\n"
                                 << service->process().output_tail();
  EXPECT_EQ(create_path(created), "clone");
  const json host = body_json(created);
  const std::string id = host["id"];
  const std::string name = host["name"];
  const int port = host["ssh_port"];

  // The stream of this host, from its first event; the CLI exits after the sixth
  // (created, four statuses, died).
  auto stream = std::async(std::launch::async, [&] {
    return run_process(
        {LB_LITTERBOX_CLI_PATH, "events", "--host", id, "--after", "0", "--max", "6", "--json"},
        {"PATH=/usr/bin:/bin", "HOME=/tmp", "SANDBOX_SERVICE_URL=" + service->url(),
         "SANDBOX_SERVICE_TOKEN=" + e2e_service::token()},
        60s);
  });

  const pid_t pid = qemu_pid(name);
  ASSERT_GT(pid, 0) << "no QEMU pid for " << name;
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  const auto killed_at = std::chrono::steady_clock::now();

  // The stream is the wait: the CLI exits once the died event arrived.
  const auto events = stream.get();
  const auto took = std::chrono::steady_clock::now() - killed_at;
  ASSERT_EQ(events.exit_code, 0) << events << "\nlitterboxd:\n" << service->process().output_tail();
  EXPECT_NE(events.out.find("\"type\":\"died\""), std::string::npos) << events.out;
  EXPECT_LT(took, 10s) << "the died event came "
                       << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                       << " ms after QEMU was killed";
  const json now = body_json(service->get(id));
  ASSERT_EQ(now.value("status", ""), "error") << now.dump();
  const std::string last_error = now.value("last_error", "");
  EXPECT_TRUE(last_error.rfind("VMCrashed: ", 0) == 0 || last_error.rfind("VMStopped: ", 0) == 0 ||
              last_error.rfind("VMGone: ", 0) == 0)
      << last_error;
  EXPECT_NE(events.out.find(last_error.substr(0, 10)), std::string::npos) << events.out;

  // Released like any failure: no domain, no overlay, the port free; the row stays. The
  // teardown follows the recorded death, so it is given a bounded moment.
  const auto released_by = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < released_by &&
         (domain_exists(name) || fs::exists(service->host_dir(id)) || !port_bindable(port))) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_FALSE(domain_exists(name));
  EXPECT_FALSE(fs::exists(service->host_dir(id))) << service->host_dir(id);
  EXPECT_TRUE(port_bindable(port)) << port;
  EXPECT_EQ(service->get(id).status, 200);
  const auto removed = service->remove(id);
  EXPECT_EQ(removed.status, 204) << removed;
  EXPECT_EQ(service->get(id).status, 404);
}

TEST(RealGuestDeath, AGuestThatPowersItselfOffEndsAsErrorVmStoppedAndIsReleased) {
  e2e_service* service = nullptr;
  ASSERT_NO_THROW(service = &cloned_guest_service());
  const auto created = service->create(json::object());
  ASSERT_EQ(created.status, 201) << created << "\nlitterboxd:\n"
                                 << service->process().output_tail();
  EXPECT_EQ(create_path(created), "clone");
  const json host = body_json(created);
  const std::string id = host["id"];
  const std::string name = host["name"];
  const int port = host["ssh_port"];
  const temp_dir work("lb-e2e-poweroff");
  const auto login = make_ssh_login(host, work.path(), host["private_key"].get<std::string>());

  auto stream = std::async(std::launch::async, [&] {
    return run_process(
        {LB_LITTERBOX_CLI_PATH, "events", "--host", id, "--after", "0", "--max", "6", "--json"},
        {"PATH=/usr/bin:/bin", "HOME=/tmp", "SANDBOX_SERVICE_URL=" + service->url(),
         "SANDBOX_SERVICE_TOKEN=" + e2e_service::token()},
        120s);
  });
  // The session ends with the guest: its exit status says nothing.
  (void)ssh_run(login, "sudo poweroff", 60s);
  const auto events = stream.get();
  ASSERT_EQ(events.exit_code, 0) << events << "\nlitterboxd:\n" << service->process().output_tail();
  EXPECT_NE(events.out.find("\"type\":\"died\""), std::string::npos) << events.out;
  const json now = body_json(service->get(id));
  EXPECT_EQ(now.value("status", ""), "error") << now.dump();
  EXPECT_EQ(now.value("last_error", ""), "VMStopped: guest powered off") << now.dump();

  const auto released_by = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < released_by &&
         (domain_exists(name) || fs::exists(service->host_dir(id)) || !port_bindable(port))) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_FALSE(domain_exists(name));
  EXPECT_FALSE(fs::exists(service->host_dir(id)));
  EXPECT_TRUE(port_bindable(port)) << port;
  EXPECT_EQ(service->remove(id).status, 204);
}

TEST(RealGuestDeath, AGuestThatDiedWhileLitterboxdWasDownIsFoundAtStartUp) {
  e2e_service* service = nullptr;
  ASSERT_NO_THROW(service = &cloned_guest_service());
  const auto created = service->create(json::object());
  ASSERT_EQ(created.status, 201) << created << "\nlitterboxd:\n"
                                 << service->process().output_tail();
  EXPECT_EQ(create_path(created), "clone");
  const json host = body_json(created);
  const std::string id = host["id"];
  const std::string name = host["name"];
  const int port = host["ssh_port"];

  service->stop_server();
  const pid_t pid = qemu_pid(name);
  ASSERT_GT(pid, 0) << "no QEMU pid for " << name;
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  // No event reaches anybody now; the start-up check must find the drift.
  service->start_server();
  const auto events = run_process(
      {LB_LITTERBOX_CLI_PATH, "events", "--host", id, "--after", "0", "--max", "6", "--json"},
      {"PATH=/usr/bin:/bin", "HOME=/tmp", "SANDBOX_SERVICE_URL=" + service->url(),
       "SANDBOX_SERVICE_TOKEN=" + e2e_service::token()},
      60s);
  ASSERT_EQ(events.exit_code, 0) << events << "\nlitterboxd:\n" << service->process().output_tail();
  EXPECT_NE(events.out.find("\"type\":\"died\""), std::string::npos) << events.out;
  const json now = body_json(service->get(id));
  EXPECT_EQ(now.value("status", ""), "error") << now.dump();
  EXPECT_EQ(now.value("last_error", "").rfind("VM", 0), 0U) << now.dump();

  const auto released_by = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < released_by &&
         (domain_exists(name) || fs::exists(service->host_dir(id)) || !port_bindable(port))) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_FALSE(domain_exists(name));
  EXPECT_FALSE(fs::exists(service->host_dir(id)));
  EXPECT_TRUE(port_bindable(port)) << port;
  EXPECT_EQ(service->remove(id).status, 204);
}

}  // namespace
}  // namespace litterbox::e2e_test
