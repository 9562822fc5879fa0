#include "tests/e2e/api/e2e_support.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <string>

namespace litterbox::e2e_test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

/// Values that break anything that pastes them into YAML, a template or a shell line.
const std::map<std::string, std::string>& hostile_env() {
  static const std::map<std::string, std::string> env{
      {"LB_SHELL", "'; touch /tmp/pwned #"},
      {"LB_SUBST", "$(id) `id` ${HOME}"},
      {"LB_TEMPLATE", "{{ x }} {% if %} ${x}"},
      {"LB_CLOUD_CONFIG", "#cloud-config"},
      {"LB_QUOTES", R"(it's "quoted" 'twice')"},
      {"LB_BACKSLASH", R"(C:\path\n\t\\ end\)"},
      {"LB_UNICODE", "h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x9a\x80 \xe2\x80\x8f"},
      {"LB_YAML", "key: [1, {a: b}] &anchor *ref !!binary | >"},
      {"LB_SPACES", "  two  leading, two trailing  "},
  };
  return env;
}

/// One line per probe, "<label> OPEN" or "<label> CLOSED", from inside the guest. A probe is a
/// TCP connect through bash's /dev/tcp bounded by `timeout`, so a dropped SYN reads as closed.
/// The probes run at once, so dropped ones cost one timeout in all.
std::string probe_script(const std::vector<std::pair<std::string, std::string>>& targets) {
  std::string script;
  for (const auto& [label, address] : targets) {
    script += "(if timeout 10 bash -c 'exec 3<>/dev/tcp/" + address + "' 2>/dev/null; then echo '" +
              label + " OPEN'; else echo '" + label + " CLOSED'; fi) & ";
  }
  return script + "wait";
}

TEST(RealGuests, TwoConcurrentCreatesAreActiveReachableOnlyWithPinnedKeysIsolatedAndFullyDeleted) {
  std::unique_ptr<e2e_service> service;
  try {
    service = std::make_unique<e2e_service>();
  } catch (const std::exception& e) {
    FAIL() << "cannot start litterboxd with the libvirt driver: " << e.what();
  }
  const temp_dir work("lb-e2e-api");
  const auto [caller_key, caller_pub] = make_ed25519_key(work.path());
  const bool pwned_before = fs::exists("/tmp/pwned");

  json env = json::object();
  for (const auto& [k, v] : hostile_env()) {
    env[k] = v;
  }

  // Both boots run at once to share the wall time of two TCG boots.
  auto minted_future = std::async(std::launch::async, [&] {
    return service->create({{"env", env}});
  });
  // A structured binding cannot be captured by clang 14; capture a copy.
  auto keyed_future = std::async(std::launch::async, [&, pub = caller_pub] {
    return service->create({{"ssh_authorized_keys", json::array({pub})}});
  });
  const auto minted_r = minted_future.get();
  const auto keyed_r = keyed_future.get();
  ASSERT_EQ(minted_r.status, 201) << minted_r << "\nlitterboxd:\n"
                                  << service->process().output_tail();
  ASSERT_EQ(keyed_r.status, 201) << keyed_r << "\nlitterboxd:\n"
                                 << service->process().output_tail();
  const json minted = body_json(minted_r);
  const json keyed = body_json(keyed_r);
  ASSERT_TRUE(minted.is_object() && keyed.is_object());

  for (const auto* h : {&minted, &keyed}) {
    EXPECT_EQ(h->value("status", ""), "active") << h->dump();
    EXPECT_EQ(h->value("provider", ""), "libvirt");
    EXPECT_EQ(h->value("name", ""), "sb-" + h->value("id", "").substr(24));
    EXPECT_FALSE(h->value("known_hosts", "").empty());
    EXPECT_TRUE(domain_exists(h->value("name", ""))) << h->dump();
  }
  ASSERT_TRUE(minted.contains("private_key") && minted["private_key"].is_string());
  EXPECT_TRUE(!keyed.contains("private_key") || keyed["private_key"].is_null())
      << "a caller-supplied key must not be answered with a minted private key";

  const auto minted_dir = work.path() / "minted";
  const auto keyed_dir = work.path() / "keyed";
  fs::create_directories(minted_dir);
  fs::create_directories(keyed_dir);
  const auto a = make_ssh_login(minted, minted_dir, minted["private_key"].get<std::string>());
  auto b = make_ssh_login(keyed, keyed_dir, "");
  b.identity = caller_key;

  {
    SCOPED_TRACE("login with the minted key and strict host-key checking");
    const auto r = ssh_run(a, "id -un");
    ASSERT_EQ(r.exit_code, 0) << r;
    EXPECT_EQ(r.out, a.user + "\n");
  }
  {
    SCOPED_TRACE("env reaches the session byte for byte and is never interpreted");
    for (const auto& [k, v] : env.items()) {
      const auto r = ssh_run(a, "printf %s \"$" + k + "\"");
      EXPECT_EQ(r.exit_code, 0) << k << ": " << r;
      EXPECT_EQ(r.out, v.get<std::string>()) << k;
    }
    const auto login_shell = ssh_run(a, "bash -lc 'printf %s \"$LB_QUOTES\"'");
    EXPECT_EQ(login_shell.out, env["LB_QUOTES"].get<std::string>()) << login_shell;
    const auto pwned = ssh_run(a, "if test -e /tmp/pwned; then echo present; else echo absent; fi");
    EXPECT_EQ(pwned.out, "absent\n") << pwned;
    if (!pwned_before) {
      EXPECT_FALSE(fs::exists("/tmp/pwned")) << "an env value ran on the hypervisor host";
    }
  }
  {
    SCOPED_TRACE("passwordless sudo and the host name");
    const auto sudo = ssh_run(a, "sudo -n true");
    EXPECT_EQ(sudo.exit_code, 0) << sudo;
    const auto hostname = ssh_run(a, "hostname");
    EXPECT_EQ(hostname.out, minted.value("name", "") + "\n") << hostname;
  }
  {
    SCOPED_TRACE("the guest cannot reach the hypervisor host's services");
    const auto pg = std::to_string(database_port(service->settings().database_url));
    const auto api = std::to_string(service->process().port());
    const auto other = std::to_string(keyed.value("ssh_port", 0));
    const auto r = ssh_run(a, probe_script({{"own-sshd", "127.0.0.1/22"},
                                            {"host-postgres", "10.0.2.2/" + pg},
                                            {"host-api", "10.0.2.2/" + api},
                                            {"other-guest-forward", "10.0.2.2/" + other},
                                            {"host-ssh", "10.0.2.2/22"}}));
    ASSERT_EQ(r.exit_code, 0) << r;
    // The first line proves the probe itself works, so the others' CLOSED means something.
    EXPECT_NE(r.out.find("own-sshd OPEN\n"), std::string::npos) << r;
    EXPECT_NE(r.out.find("host-postgres CLOSED\n"), std::string::npos) << r;
    EXPECT_NE(r.out.find("host-api CLOSED\n"), std::string::npos) << r;
    EXPECT_NE(r.out.find("other-guest-forward CLOSED\n"), std::string::npos) << r;
    EXPECT_NE(r.out.find("host-ssh CLOSED\n"), std::string::npos) << r;
  }
  {
    SCOPED_TRACE("the second host takes the caller's key and only it");
    const auto r = ssh_run(b, "id -un");
    EXPECT_EQ(r.exit_code, 0) << r;
    EXPECT_EQ(r.out, b.user + "\n");
    auto wrong = b;
    wrong.identity = a.identity;
    const auto refused = ssh_run(wrong, "true");
    EXPECT_NE(refused.exit_code, 0) << "the minted key of another host logged in: " << refused;
  }
  {
    SCOPED_TRACE("another host's key pinned for this endpoint is refused");
    // The first host's key line, relabelled with the second host's endpoint: OpenSSH must
    // see a mismatch and refuse, never fall back to trusting what it is shown.
    const auto line = read_whole_file(a.known_hosts);
    const auto own = read_whole_file(b.known_hosts);
    auto swapped = b;
    swapped.known_hosts = work.path() / "swapped_known_hosts";
    write_private_file(swapped.known_hosts,
                       own.substr(0, own.find(' ')) + line.substr(line.find(' ')));
    const auto r = ssh_run(swapped, "true");
    EXPECT_NE(r.exit_code, 0) << r;
  }
  {
    SCOPED_TRACE("console");
    const auto r =
        service->http().get("/hosts/" + minted.value("id", "") + "/console", e2e_service::auth());
    EXPECT_EQ(r.status, 200) << r;
    EXPECT_EQ(r.header("Content-Type").value_or("").rfind("text/plain", 0), 0U) << r;
    EXPECT_FALSE(r.body.empty());
  }
  for (const auto* h : {&minted, &keyed}) {
    SCOPED_TRACE("delete " + h->value("id", ""));
    const auto r = service->remove(h->value("id", ""));
    EXPECT_EQ(r.status, 204) << r << "\nlitterboxd:\n" << service->process().output_tail();
    EXPECT_TRUE(r.body.empty());
    EXPECT_EQ(leftovers(*service, *h), std::vector<std::string>{});
  }
}

}  // namespace
}  // namespace litterbox::e2e_test
