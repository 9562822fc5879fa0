#pragma once

#include "tests/support/http_client.hpp"
#include "tests/support/litterboxd_process.hpp"
#include "tests/support/pg_database.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

// Helpers shared by the end-to-end suites that drive real guests through a real litterboxd
// (tests/e2e/api, tests/e2e/lifecycle, tests/e2e/client). Everything here blocks; nothing
// runs a shell on our side: every command is an argv.
namespace litterbox::e2e_test {

/// The value of environment variable `name`. Throws std::runtime_error naming the variable
/// and `what_sets_it` when it is unset or empty: e2e tests fail, they never skip.
std::string required_env(const char* name, const char* what_sets_it);

/// The value of environment variable `name`, or "" when unset.
std::string optional_env(const char* name);

/// A fresh directory under the temp dir, mode 0755 (so the libvirt-qemu user can traverse
/// it), removed with its contents by the destructor.
class temp_dir {
 public:
  explicit temp_dir(const std::string& prefix = "lb-e2e");
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

/// What a finished child process left behind.
struct process_result {
  int exit_code = -1;      ///< exit status, or -1 when killed by a signal or never started
  bool timed_out = false;  ///< killed because it ran past its timeout
  std::string out;         ///< everything it wrote to stdout
  std::string err;         ///< everything it wrote to stderr
};

/// Prints exit code, stdout and stderr so a failed expectation shows the whole run.
std::ostream& operator<<(std::ostream& os, const process_result& r);

/// Runs `argv` (argv[0] looked up on PATH when it has no slash) with exactly the environment
/// `env` ("NAME=value"), stdin from /dev/null, stdout and stderr captured apart. Kills it
/// (SIGKILL) after `timeout`. Never throws for a failing child; throws std::runtime_error
/// when the process cannot be started at all.
process_result run_process(const std::vector<std::string>& argv,
                           const std::vector<std::string>& env, std::chrono::seconds timeout);

/// Writes `data` to `path` with mode 0600.
void write_private_file(const std::filesystem::path& path, const std::string& data);
/// The whole content of `path` ("" when unreadable).
std::string read_whole_file(const std::filesystem::path& path);

/// How OpenSSH reaches one guest: strict host-key checking against a known_hosts file that
/// holds only the lines the API returned, one identity, no agent, no config files.
struct ssh_login {
  std::string host;
  int port = 0;
  std::string user;
  std::filesystem::path known_hosts;
  std::filesystem::path identity;
};

/// Writes `known_hosts` and `private_key` (0600) into `dir` (made when missing) and returns
/// the login for `host` (a Host object as the API returns it).
ssh_login make_ssh_login(const nlohmann::json& host, const std::filesystem::path& dir,
                         const std::string& private_key);

/// Runs `remote_command` in the guest through `ssh` (the remote login shell interprets it,
/// as it would for any caller). Bounded by `timeout`.
process_result ssh_run(const ssh_login& login, const std::string& remote_command,
                       std::chrono::seconds timeout = std::chrono::seconds(120));

/// A new ed25519 key pair made by ssh-keygen in `dir`: the private key's path and the public
/// key's line.
std::pair<std::filesystem::path, std::string> make_ed25519_key(const std::filesystem::path& dir);

/// The libvirt URI the tests talk to (LIBVIRT_URI, default qemu:///system).
std::string libvirt_uri();
/// Names of all domains libvirt knows (running or not), through `virsh list --all --name`.
/// Throws std::runtime_error when virsh fails.
std::vector<std::string> libvirt_domains();
/// True when a domain named `name` exists (in any state).
bool domain_exists(const std::string& name);
/// Runs `virsh -c <uri> args…`.
process_result virsh(const std::vector<std::string>& args);

/// True when 127.0.0.1:`port` can be bound right now (nothing listens or holds it).
bool port_bindable(int port);

/// The TCP port in a libpq URL (postgresql://user@host:port/db); 5432 when it names none.
int database_port(const std::string& url);

/// `count` consecutive loopback ports, all free right now, as "lo-hi" for
/// LITTERBOX_SSH_PORTS; chosen at random above 20000 so parallel runs rarely meet.
std::string free_port_range(int count);

/// The settings the e2e environment provides (scripts/test exports them). Reading them fails
/// with a message naming the first missing variable.
struct e2e_settings {
  std::string image;         ///< LITTERBOX_E2E_IMAGE: the reference image in the registry
  std::string registry;      ///< LITTERBOX_REGISTRY_ADDR (or the image's host:port)
  std::string state_dir;     ///< LITTERBOX_STATE_DIR: image cache and per-host files
  std::string kernel;        ///< LITTERBOX_KERNEL (optional: litterboxd picks /boot's)
  std::string initrd;        ///< LITTERBOX_INITRD (optional)
  std::string database_url;  ///< LITTERBOX_TEST_DATABASE_URL: admin URL of the test cluster
};
e2e_settings load_settings();

/// A throw-away database and one `litterboxd serve --hypervisor=libvirt` (TCG, loopback
/// registry, a private SSH port range) on it, shared by the checks of one test binary.
class e2e_service {
 public:
  /// Starts the service; `extra_args` are appended to `serve`. Throws std::runtime_error
  /// with the reason (a missing variable, litterboxd's output) when it cannot start.
  explicit e2e_service(std::vector<std::string> extra_args = {});
  /// As above, but with `state_dir` (created when missing) as its state directory instead of
  /// LITTERBOX_STATE_DIR: image cache, templates and per-host files that no other suite shares.
  e2e_service(std::vector<std::string> extra_args, const std::filesystem::path& state_dir);
  ~e2e_service();
  e2e_service(const e2e_service&) = delete;
  e2e_service& operator=(const e2e_service&) = delete;

  const e2e_settings& settings() const { return settings_; }
  test::litterboxd_process& process() { return *server_; }
  /// A client whose requests may block for a whole boot.
  const test::http_client& http() const { return *http_; }
  /// http://127.0.0.1:<port>
  std::string url() const;
  static std::string token();
  /// The Authorization header plus `more`.
  static std::vector<test::http_header> auth(std::vector<test::http_header> more = {});
  /// The environment litterboxd runs with ("NAME=value"), for `litterboxd reap`.
  std::vector<std::string> environment() const;
  /// Runs `litterboxd reap` once with this service's configuration; bounded by `timeout`.
  process_result reap(std::chrono::seconds timeout = std::chrono::seconds(300)) const;
  /// The owner tag this service writes into its domains' metadata and sweeps by: one of its
  /// own when litterboxd takes LITTERBOX_OWNER (so its sweeps never meet another run's
  /// domains on a shared libvirtd), else litterboxd's fixed default `litterbox`.
  const std::string& owner() const { return owner_; }
  /// Per-host files of `host_id` (<state>/vms/<id>).
  std::filesystem::path host_dir(const std::string& host_id) const;
  /// The connection URL of this service's own database.
  const std::string& database_url() const;
  /// SIGKILLs litterboxd (a crash: no drain, no cleanup) and starts a new one on the same
  /// database, state directory, SSH ports, owner tag and arguments; http() then talks to the
  /// new process. Throws std::runtime_error when the new one cannot start.
  void kill_and_restart();

  /// Stops litterboxd (SIGTERM); the database, guests and files stay.
  void stop_server();
  /// Starts litterboxd again with the same configuration (on a new port).
  void start_server();

  /// POST /hosts with `body`, blocking until the host is active or failed.
  test::http_response create(const nlohmann::json& body) const;
  test::http_response get(const std::string& id) const;
  test::http_response remove(const std::string& id) const;

 private:
  e2e_settings settings_;
  std::string ssh_ports_;
  std::string owner_ = "litterbox";
  bool owner_configurable_ = false;
  std::unique_ptr<test::test_database> db_;
  test::litterboxd_options options_;  ///< what server_ was started with (restarts reuse it)
  std::unique_ptr<test::litterboxd_process> server_;
  std::unique_ptr<test::http_client> http_;
};

/// `r`'s body as JSON (a discarded value when it is not JSON).
nlohmann::json body_json(const test::http_response& r);

/// Why a host is not fully gone: a libvirt domain named host["name"], files under
/// <state>/vms/<id>, an SSH port that cannot be bound, a GET that is not 404. Empty when
/// nothing is left.
std::vector<std::string> leftovers(const e2e_service& service, const nlohmann::json& host);

}  // namespace litterbox::e2e_test
