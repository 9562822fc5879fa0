// Fast creates with real guests: one litterboxd (templates on, a warm pool of 4) on its own
// database, state directory, owner tag and image repository, shared by every test of this
// binary, so the template is built once. Tests run in order; each starts from a full pool and
// ends with its hosts deleted and nothing of theirs left.
#include "tests/e2e/api/e2e_support.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace litterbox::e2e_test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

constexpr int k_pool_size = 4;
constexpr const char* k_path_env =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
constexpr const char* k_metadata_ns = "https://litterbox.dev/xmlns/domain/1";
constexpr const char* k_marker_path = "/etc/litterbox-e2e-digest";

/// The values of the API suite that break anything pasting them into YAML, a template or a
/// shell line.
json hostile_env() {
  return {
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
}

double seconds_since(steady::time_point t) {
  return std::chrono::duration<double>(steady::now() - t).count();
}

process_result tool(const std::vector<std::string>& argv, std::chrono::seconds timeout = 300s) {
  return run_process(argv, {k_path_env, "HOME=/root"}, timeout);
}

/// The value of the first sample of `metric` whose line contains every one of `labels`.
std::optional<double> sample(const std::string& scrape, const std::string& metric,
                             const std::vector<std::string>& labels) {
  std::istringstream in(scrape);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(metric + "{", 0) != 0) {
      continue;
    }
    const bool all = std::all_of(labels.begin(), labels.end(), [&](const std::string& l) {
      return line.find(l) != std::string::npos;
    });
    if (all) {
      return std::stod(line.substr(line.rfind(' ') + 1));
    }
  }
  return std::nullopt;
}

std::string create_path(const test::http_response& r) {
  return r.header("X-Litterbox-Create-Path").value_or("");
}

/// A libvirt domain carrying our metadata: the host (or template) id it names and its owner.
struct owned_domain {
  std::string name;
  std::string host_id;      ///< empty for a template guest
  std::string template_id;  ///< empty for a host
};

/// Every domain whose litterbox metadata names `owner`. A domain that vanishes while it is
/// listed, or carries no metadata of ours, is not listed.
std::vector<owned_domain> owned_domains(const std::string& owner) {
  static const std::regex owner_re(R"(owner>([^<]*)<)");
  static const std::regex host_re(R"(host-id>([^<]*)<)");
  static const std::regex template_re(R"(template-id>([^<]*)<)");
  std::vector<owned_domain> out;
  for (const auto& name : libvirt_domains()) {
    const auto r = virsh({"metadata", name, k_metadata_ns});
    std::smatch m;
    if (r.exit_code != 0 || !std::regex_search(r.out, m, owner_re) || m[1].str() != owner) {
      continue;
    }
    owned_domain d{name, "", ""};
    if (std::regex_search(r.out, m, host_re)) {
      d.host_id = m[1].str();
    }
    if (std::regex_search(r.out, m, template_re)) {
      d.template_id = m[1].str();
    }
    out.push_back(d);
  }
  return out;
}

/// One row of the hosts table, as the leak checks need it.
struct host_row {
  std::string id;
  std::string name;
  std::string status;
  bool pooled = false;
  std::string digest;
};

std::vector<host_row> host_rows(const std::string& db_url) {
  pqxx::connection c(db_url);
  pqxx::nontransaction tx(c);
  std::vector<host_row> rows;
  for (const auto& r : tx.exec("SELECT id::text, name, status, pooled, "
                               "COALESCE(image_digest, '') FROM hosts ORDER BY id")) {
    rows.push_back({r[0].as<std::string>(), r[1].as<std::string>(), r[2].as<std::string>(),
                    r[3].as<bool>(), r[4].as<std::string>()});
  }
  return rows;
}

std::string digest_of(const std::string& db_url, const std::string& host_id) {
  for (const auto& row : host_rows(db_url)) {
    if (row.id == host_id) {
      return row.digest;
    }
  }
  return "";
}

/// Everything of ours that should not be there: a domain with our owner tag and no live row
/// (nor a template being built), a live host row without its domain, per-host files of a host
/// that has no live row, two rows naming one domain. Empty when all is consistent.
std::vector<std::string> leaks(const e2e_service& service) {
  std::vector<std::string> problems;
  const auto rows = host_rows(service.database_url());
  std::map<std::string, host_row> live;
  bool template_building = false;
  {
    pqxx::connection c(service.database_url());
    pqxx::nontransaction tx(c);
    template_building =
        tx.exec1("SELECT count(*) FROM templates WHERE status = 'building'")[0].as<int>() > 0;
  }
  std::set<std::string> names;
  for (const auto& row : rows) {
    if (!names.insert(row.name).second) {
      problems.push_back("two rows name domain " + row.name);
    }
    if (row.status != "error") {
      live[row.id] = row;
    }
  }
  std::set<std::string> with_domain;
  for (const auto& d : owned_domains(service.owner())) {
    if (!d.template_id.empty()) {
      if (!template_building) {
        problems.push_back("template guest " + d.name + " runs with no template being built");
      }
      continue;
    }
    if (live.count(d.host_id) == 0) {
      problems.push_back("domain " + d.name + " (host " + d.host_id + ") has no live row");
    }
    with_domain.insert(d.host_id);
  }
  for (const auto& [id, row] : live) {
    // A row still being provisioned may not have its domain yet.
    if (row.status == "active" && with_domain.count(id) == 0) {
      problems.push_back("active host " + id + (row.pooled ? " (pool member)" : "") +
                         " has no domain");
    }
  }
  std::error_code ec;
  const auto vms = fs::path(service.settings().state_dir) / "vms";
  if (fs::exists(vms, ec)) {
    for (const auto& e : fs::directory_iterator(vms, ec)) {
      const auto id = e.path().filename().string();
      // Dot files (the overlay lock) are the driver's own, no host's.
      if (!id.empty() && id.front() != '.' && live.count(id) == 0) {
        problems.push_back("files of a host with no live row remain: " + e.path().string());
      }
    }
  }
  return problems;
}

/// Polls (bounded) until leaks() is empty: teardowns run in the background. The last
/// problems seen when it never is.
std::vector<std::string> settled_leaks(const e2e_service& service,
                                       std::chrono::seconds limit = 120s) {
  const auto until = steady::now() + limit;
  auto problems = leaks(service);
  while (!problems.empty() && steady::now() < until) {
    std::this_thread::sleep_for(500ms);  // polling, not timing
    problems = leaks(service);
  }
  return problems;
}

/// The values of `names` in a login session of `login`, each exactly as the guest holds it,
/// plus the login user, the host name and whether /tmp/pwned exists, in one SSH round trip.
struct session_view {
  process_result ssh;
  std::vector<std::string> fields;  ///< user, hostname, pwned, then one per name
};

session_view look_inside(const ssh_login& login, const std::vector<std::string>& names) {
  std::string cmd =
      "printf '%s\\0' \"$(id -un)\" \"$(hostname)\" "
      "\"$(if test -e /tmp/pwned; then echo present; else echo absent; fi)\"";
  for (const auto& n : names) {
    cmd += " \"$" + n + "\"";
  }
  session_view v{ssh_run(login, cmd), {}};
  std::string field;
  for (const char ch : v.ssh.out) {
    if (ch == '\0') {
      v.fields.push_back(field);
      field.clear();
    } else {
      field += ch;
    }
  }
  return v;
}

/// Logs in to `host` with strict host-key checking against only its returned known_hosts and
/// checks the login user, host name and every value of `env` byte for byte.
void expect_session(const json& host, const ssh_login& login, const json& env) {
  std::vector<std::string> names;
  for (const auto& [k, v] : env.items()) {
    names.push_back(k);
  }
  const auto view = look_inside(login, names);
  ASSERT_EQ(view.ssh.exit_code, 0) << view.ssh;
  ASSERT_EQ(view.fields.size(), 3 + names.size()) << view.ssh;
  EXPECT_EQ(view.fields[0], login.user);
  EXPECT_EQ(view.fields[1], host.value("name", ""));
  EXPECT_EQ(view.fields[2], "absent") << "an env value ran in the guest";
  for (std::size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(view.fields[3 + i], env[names[i]].get<std::string>()) << names[i];
  }
}

/// Another host's pinned key relabelled with `login`'s endpoint must be refused.
void expect_foreign_key_refused(const ssh_login& login, const ssh_login& other,
                                const fs::path& dir) {
  const auto theirs = read_whole_file(other.known_hosts);
  const auto own = read_whole_file(login.known_hosts);
  auto swapped = login;
  swapped.known_hosts = dir / "swapped_known_hosts";
  write_private_file(swapped.known_hosts,
                     own.substr(0, own.find(' ')) + theirs.substr(theirs.find(' ')));
  const auto r = ssh_run(swapped, "true");
  EXPECT_NE(r.exit_code, 0) << "a clone accepted another clone's pinned host key: " << r;
}

class FastCreatesRealGuests : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto started = steady::now();
    try {
      work_ = std::make_unique<temp_dir>("lb-e2e-fast");
      const auto settings = load_settings();
      source_image_ = settings.image;
      // The suite's own repository in the run's registry: pushing a new digest under its tag
      // changes no image another suite uses.
      image_ = settings.registry + "/" + fs::path(work_->path()).filename().string() + "/debian:12";
      std::transform(image_.begin(), image_.end(), image_.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      const auto copied =
          tool({"skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                "docker://" + source_image_, "docker://" + image_});
      if (copied.exit_code != 0) {
        std::ostringstream s;
        s << "skopeo copy to the suite's repository failed: " << copied;
        throw std::runtime_error(s.str());
      }
      // A process counts as dead after three missed heartbeats, and a live one judges its
      // own work by the same rule: at 1 s, a busy 2-core machine (a late PostgreSQL commit)
      // made litterboxd fail its own template build twice in one run. 5 s keeps that away
      // and still lets a restart recover a killed process's work within 15 s.
      service_ = std::make_unique<e2e_service>(
          std::vector<std::string>{"--templates", "on", "--pool", std::to_string(k_pool_size),
                                   "--default-image", image_, "--pool-refill-per-minute", "60",
                                   "--heartbeat-interval", "5", "--reap-interval", "2"},
          work_->path() / "state");
      // The first pass builds the template (a cold boot, stripped and saved), then restores
      // the members.
      if (!pool_full(1500s)) {
        throw std::runtime_error("the pool never filled:\n" + service_->process().output_tail());
      }
      std::cout << "[ setup    ] template built and pool of " << k_pool_size << " filled in "
                << seconds_since(started) << " s" << std::endl;
    } catch (const std::exception& e) {
      setup_error_ = e.what();
    }
  }

  static void TearDownTestSuite() {
    if (service_) {
      const std::string owner = service_->owner();
      delete_all_hosts();
      service_.reset();
      // Pool members (and a template guest a build left) outlive litterboxd by design.
      for (const auto& d : owned_domains(owner)) {
        virsh({"destroy", d.name});
        virsh({"undefine", d.name});
      }
    }
    work_.reset();
  }

  void SetUp() override {
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
    ASSERT_TRUE(pool_full(600s)) << "the pool did not refill before the test:\n"
                                 << service_->process().output_tail();
    started_ = steady::now();
  }

  void TearDown() override {
    if (!service_) {
      return;
    }
    std::cout << "[ timing   ] " << ::testing::UnitTest::GetInstance()->current_test_info()->name()
              << ": " << seconds_since(started_) << " s" << std::endl;
    delete_all_hosts();
    EXPECT_EQ(settled_leaks(*service_), std::vector<std::string>{})
        << service_->process().output_tail();
  }

  /// Waits (bounded) until the pool has `ready` claimable members and none restoring.
  static bool pool_reaches(double ready, double filling, std::chrono::seconds limit) {
    const auto until = steady::now() + limit;
    while (steady::now() < until) {
      const auto r = service_->http().get("/metrics", e2e_service::auth());
      if (r.status == 200 &&
          sample(r.body, "litterbox_pool_members", {"state=\"ready\""}) == ready &&
          sample(r.body, "litterbox_pool_members", {"state=\"filling\""}) == filling) {
        return true;
      }
      std::this_thread::sleep_for(100ms);  // polling, not timing
    }
    return false;
  }
  static bool pool_full(std::chrono::seconds limit) { return pool_reaches(k_pool_size, 0, limit); }

  /// Waits (bounded) until /metrics reports at least one member restoring.
  static bool refill_under_way(std::chrono::seconds limit) {
    const auto until = steady::now() + limit;
    while (steady::now() < until) {
      const auto r = service_->http().get("/metrics", e2e_service::auth());
      if (r.status == 200 &&
          sample(r.body, "litterbox_pool_members", {"state=\"filling\""}).value_or(0) >= 1) {
        return true;
      }
      std::this_thread::sleep_for(20ms);  // polling, not timing
    }
    return false;
  }

  static test::http_response create(const json& body, std::vector<test::http_header> headers = {}) {
    headers.emplace_back("Content-Type", "application/json");
    return service_->http().post("/hosts", body.dump(), e2e_service::auth(std::move(headers)));
  }

  /// Polls `id` until its status is `want` (bounded); the last status seen.
  static std::string wait_status(const std::string& id, const std::string& want,
                                 std::chrono::seconds limit) {
    const auto until = steady::now() + limit;
    std::string status;
    while (steady::now() < until) {
      const auto r = service_->get(id);
      status = r.status == 200 ? body_json(r).value("status", "") : std::to_string(r.status);
      if (status == want) {
        break;
      }
      std::this_thread::sleep_for(100ms);  // polling, not timing
    }
    return status;
  }

  /// DELETEs every host GET /hosts lists, all at once.
  static void delete_all_hosts() {
    const auto r = service_->http().get("/hosts?limit=1000", e2e_service::auth());
    const auto list = body_json(r);
    if (r.status != 200 || !list.is_array()) {
      ADD_FAILURE() << "GET /hosts: " << r;
      return;
    }
    std::vector<std::future<test::http_response>> deletes;
    for (const auto& h : list) {
      deletes.push_back(std::async(std::launch::async,
                                   [id = h.value("id", "")] { return service_->remove(id); }));
    }
    for (auto& d : deletes) {
      const auto dr = d.get();
      EXPECT_EQ(dr.status, 204) << dr;
    }
  }

  /// A login for `host` in a fresh directory under the suite's temp dir.
  static ssh_login login_for(const json& host, const std::string& private_key) {
    const auto dir = work_->path() / ("login-" + host.value("id", ""));
    fs::create_directories(dir);
    return make_ssh_login(host, dir, private_key);
  }

  static std::string image_;
  static std::string source_image_;
  static std::string setup_error_;
  static std::unique_ptr<temp_dir> work_;
  static std::unique_ptr<e2e_service> service_;
  steady::time_point started_;
};

std::string FastCreatesRealGuests::image_;
std::string FastCreatesRealGuests::source_image_;
std::string FastCreatesRealGuests::setup_error_;
std::unique_ptr<temp_dir> FastCreatesRealGuests::work_;
std::unique_ptr<e2e_service> FastCreatesRealGuests::service_;

TEST_F(FastCreatesRealGuests, PoolClaimTakesTheCallersOwnKeyAndEnvAndMintsNoKey) {
  const auto [caller_key, caller_pub] = make_ed25519_key(work_->path());
  const json env = {{"PROJECT", "fast-e2e"}, {"TOKEN", "s3cr3t value with spaces"}};
  const auto t = steady::now();
  const auto r = create({{"env", env}, {"ssh_authorized_keys", json::array({caller_pub})}});
  const double took = seconds_since(t);
  ASSERT_EQ(r.status, 201) << r << "\nlitterboxd:\n" << service_->process().output_tail();
  EXPECT_EQ(create_path(r), "pool");
  std::cout << "[ timing   ] pool claim with the caller's key: " << took << " s" << std::endl;
  const auto host = body_json(r);
  EXPECT_EQ(host.value("status", ""), "active");
  EXPECT_TRUE(!host.contains("private_key") || host["private_key"].is_null())
      << "a caller-supplied key must not be answered with a minted private key: " << host.dump();

  auto login = login_for(host, "");
  login.identity = caller_key;
  expect_session(host, login, env);

  // The caller's key is the only one: a key of our own making is refused.
  const auto [stranger_key, stranger_pub] =
      make_ed25519_key(work_->path() / ("login-" + host.value("id", "")));
  (void)stranger_pub;
  auto stranger = login;
  stranger.identity = stranger_key;
  const auto refused = ssh_run(stranger, "true");
  EXPECT_NE(refused.exit_code, 0) << "a key the caller never gave logged in: " << refused;
}

TEST_F(FastCreatesRealGuests,
       PoolExhaustedByConcurrentCreatesFallsBackToClonesAndAllLogInStrictly) {
  constexpr int k_creates = k_pool_size + 2;
  const json env = hostile_env();
  const bool pwned_before = fs::exists("/tmp/pwned");
  std::vector<std::future<test::http_response>> futures;
  for (int i = 0; i < k_creates; ++i) {
    futures.push_back(std::async(std::launch::async, [&env] { return create({{"env", env}}); }));
  }
  std::map<std::string, std::vector<json>> by_path;
  for (auto& f : futures) {
    const auto r = f.get();
    ASSERT_EQ(r.status, 201) << r << "\nlitterboxd:\n" << service_->process().output_tail();
    const auto host = body_json(r);
    ASSERT_TRUE(host.contains("private_key") && host["private_key"].is_string()) << r;
    by_path[create_path(r)].push_back(host);
  }
  EXPECT_EQ(by_path["pool"].size(), static_cast<std::size_t>(k_pool_size));
  EXPECT_EQ(by_path["clone"].size(), static_cast<std::size_t>(k_creates - k_pool_size));
  EXPECT_EQ(by_path.count("boot"), 0U) << "the template exists: nothing boots";
  ASSERT_FALSE(by_path["pool"].empty());
  ASSERT_FALSE(by_path["clone"].empty());

  const auto& pooled = by_path["pool"].front();
  const auto& cloned = by_path["clone"].front();
  const auto pool_login = login_for(pooled, pooled["private_key"].get<std::string>());
  const auto clone_login = login_for(cloned, cloned["private_key"].get<std::string>());
  {
    SCOPED_TRACE("pool claim: strict host-key checking, the minted key, env byte for byte");
    expect_session(pooled, pool_login, env);
  }
  {
    SCOPED_TRACE("clone: strict host-key checking, the minted key, env byte for byte");
    expect_session(cloned, clone_login, env);
  }
  if (!pwned_before) {
    EXPECT_FALSE(fs::exists("/tmp/pwned")) << "an env value ran on the hypervisor host";
  }
  {
    SCOPED_TRACE("each one's pinned key and login key are its own");
    expect_foreign_key_refused(pool_login, clone_login,
                               work_->path() / ("login-" + pooled.value("id", "")));
    expect_foreign_key_refused(clone_login, pool_login,
                               work_->path() / ("login-" + cloned.value("id", "")));
    auto wrong = clone_login;
    wrong.identity = pool_login.identity;
    const auto r = ssh_run(wrong, "true");
    EXPECT_NE(r.exit_code, 0) << "the pool host's key logged in to the clone: " << r;
  }
}

TEST_F(FastCreatesRealGuests, TwentyConcurrentCreatesHalfSharingOneIdempotencyKeyMakeElevenHosts) {
  constexpr int k_creates = 20;
  const json body = {{"env", {{"BATCH", "twenty"}}}};
  std::vector<std::future<test::http_response>> futures;
  const auto t = steady::now();
  for (int i = 0; i < k_creates; ++i) {
    futures.push_back(std::async(std::launch::async, [&body, keyed = i % 2 == 0] {
      if (keyed) {
        return create(body, {{"Idempotency-Key", "fast-e2e-twenty"}});
      }
      return create(body);
    }));
  }
  std::set<std::string> ids;
  std::set<std::string> keyed_ids;
  std::map<std::string, int> paths;
  int minted_keys = 0;
  for (int i = 0; i < k_creates; ++i) {
    const auto r = futures[static_cast<std::size_t>(i)].get();
    ASSERT_EQ(r.status, 201) << r << "\nlitterboxd:\n" << service_->process().output_tail();
    const auto host = body_json(r);
    EXPECT_EQ(host.value("status", ""), "active") << host.dump();
    ids.insert(host.value("id", ""));
    if (i % 2 == 0) {
      keyed_ids.insert(host.value("id", ""));
      minted_keys += host.contains("private_key") && host["private_key"].is_string() ? 1 : 0;
    } else {
      ++paths[create_path(r)];
    }
  }
  std::cout << "[ timing   ] 20 concurrent creates answered in " << seconds_since(t) << " s"
            << std::endl;
  EXPECT_EQ(keyed_ids.size(), 1U) << "one Idempotency-Key, one host";
  EXPECT_EQ(minted_keys, 1) << "only the request that created the host gets its private key";
  EXPECT_EQ(ids.size(), 11U);
  EXPECT_EQ(paths["boot"], 0);
  EXPECT_EQ(paths["pool"] + paths["clone"], k_creates / 2);

  const auto listed = body_json(service_->http().get("/hosts?limit=1000", e2e_service::auth()));
  ASSERT_TRUE(listed.is_array());
  EXPECT_EQ(listed.size(), 11U) << listed.dump();
  int caller_rows = 0;
  for (const auto& row : host_rows(service_->database_url())) {
    caller_rows += !row.pooled && row.status != "error" ? 1 : 0;
  }
  EXPECT_EQ(caller_rows, 11);
  int domains = 0;
  for (const auto& d : owned_domains(service_->owner())) {
    domains += ids.count(d.host_id) > 0 ? 1 : 0;
  }
  EXPECT_EQ(domains, 11) << "one domain per host, none twice";
}

TEST_F(FastCreatesRealGuests, KillNineDuringAClaimLeaksNothingClaimsNothingTwiceAndThePoolRefills) {
  const auto r = create(
      json::object(), {{"Idempotency-Key", "fast-e2e-killed-claim"}, {"Prefer", "respond-async"}});
  ASSERT_EQ(r.status, 202) << r;
  const auto claimed_id = body_json(r).value("id", "");
  std::string status = body_json(r).value("status", "");
  // The claim is one transaction: its 202 already names the member, now the caller's host,
  // with the login still to be written through the guest agent.
  if (status != "bootstrapping") {
    status = wait_status(claimed_id, "bootstrapping", 30s);
  }
  ASSERT_EQ(status, "bootstrapping");
  service_->kill_and_restart();

  EXPECT_EQ(wait_status(claimed_id, "error", 180s), "error") << service_->process().output_tail();
  ASSERT_TRUE(pool_full(600s)) << "the pool refills after the restart:\n"
                               << service_->process().output_tail();
  EXPECT_EQ(settled_leaks(*service_), std::vector<std::string>{});
  for (const auto& row : host_rows(service_->database_url())) {
    if (row.id == claimed_id) {
      EXPECT_FALSE(row.pooled) << "a claimed member went back to the pool";
      EXPECT_EQ(row.status, "error");
    }
  }
  for (const auto& d : owned_domains(service_->owner())) {
    EXPECT_NE(d.host_id, claimed_id) << "the interrupted claim's domain survived";
  }

  // The key is free again: the retry is a new host from the pool, never the failed one.
  const auto retried = create(json::object(), {{"Idempotency-Key", "fast-e2e-killed-claim"}});
  ASSERT_EQ(retried.status, 201) << retried << "\nlitterboxd:\n"
                                 << service_->process().output_tail();
  EXPECT_EQ(create_path(retried), "pool");
  const auto host = body_json(retried);
  EXPECT_NE(host.value("id", ""), claimed_id);
  const auto login = login_for(host, host.value("private_key", ""));
  expect_session(host, login, json::object());
}

TEST_F(FastCreatesRealGuests, KillNineDuringARefillLeaksNothingAndThePoolRefillsAfterRestart) {
  const auto claimed = create(json::object());
  ASSERT_EQ(claimed.status, 201) << claimed;
  EXPECT_EQ(create_path(claimed), "pool");
  ASSERT_TRUE(refill_under_way(60s)) << "a claim wakes the refill:\n"
                                     << service_->process().output_tail();
  std::set<std::string> restoring;
  for (const auto& row : host_rows(service_->database_url())) {
    if (row.pooled && row.status != "active" && row.status != "error") {
      restoring.insert(row.id);
    }
  }
  service_->kill_and_restart();
  ASSERT_FALSE(restoring.empty()) << "no member was being restored at the kill";

  ASSERT_TRUE(pool_full(600s)) << "the pool refills after the restart:\n"
                               << service_->process().output_tail();
  EXPECT_EQ(settled_leaks(*service_), std::vector<std::string>{});
  for (const auto& row : host_rows(service_->database_url())) {
    if (restoring.count(row.id) > 0) {
      EXPECT_EQ(row.status, "error") << "the interrupted member " << row.id << " was kept";
    }
  }
  for (const auto& d : owned_domains(service_->owner())) {
    EXPECT_EQ(restoring.count(d.host_id), 0U) << "the interrupted member's domain survived";
  }
  // The caller's host claimed before the kill is untouched by the recovery.
  const auto host = body_json(claimed);
  EXPECT_EQ(wait_status(host.value("id", ""), "active", 5s), "active");
  const auto login = login_for(host, host.value("private_key", ""));
  const auto r = ssh_run(login, "true");
  EXPECT_EQ(r.exit_code, 0) << r;
}

TEST_F(FastCreatesRealGuests, NewDigestBehindTheSameTagIsNeverServedByAnOldCloneOrPoolMember) {
  // The suite's tag gets a new digest: the same image plus one file.
  const auto before = create(json::object());
  ASSERT_EQ(before.status, 201) << before;
  const std::string old_digest =
      digest_of(service_->database_url(), body_json(before).value("id", ""));
  ASSERT_FALSE(old_digest.empty());

  const auto dir = work_->path() / "changed-image";
  const auto rootfs = dir / "root";
  const std::string marker_rel = std::string(k_marker_path).substr(1);
  fs::create_directories((rootfs / marker_rel).parent_path());
  const auto layout = (dir / "oci").string() + ":12";
  const std::string marker = "digest-" + fs::path(work_->path()).filename().string();
  write_private_file(rootfs / marker_rel, marker);
  // The layer is made by GNU tar and added verbatim: umoci 0.4.7's `insert` writes a tar
  // without its padding and end blocks, which every unpacker (tar included) rejects.
  for (const auto& step : std::vector<std::vector<std::string>>{
           {"skopeo", "copy", "--quiet", "--src-tls-verify=false", "docker://" + image_,
            "oci:" + layout},
           {"tar", "-C", rootfs.string(), "--owner=0", "--group=0", "--numeric-owner",
            "--mode=0644", "-cf", (dir / "layer.tar").string(), marker_rel},
           {"umoci", "raw", "add-layer", "--image", layout, (dir / "layer.tar").string()},
           {"skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci:" + layout,
            "docker://" + image_}}) {
    const auto r = tool(step);
    ASSERT_EQ(r.exit_code, 0) << step.front() << " " << step[1] << ": " << r;
  }

  // The pool is full of members of the old digest and its template is ready: neither may
  // serve. The create boots the new image.
  const auto after = create(json::object());
  ASSERT_EQ(after.status, 201) << after << "\nlitterboxd:\n" << service_->process().output_tail();
  EXPECT_EQ(create_path(after), "boot");
  const auto host = body_json(after);
  EXPECT_NE(digest_of(service_->database_url(), host.value("id", "")), old_digest);
  const auto login = login_for(host, host.value("private_key", ""));
  const auto r = ssh_run(login, std::string("cat ") + k_marker_path);
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, marker) << "the host runs the old image";

  // The old digest's members are retired; no member of it is left to be claimed.
  const auto until = steady::now() + 120s;
  std::vector<std::string> old_members;
  do {
    old_members.clear();
    for (const auto& row : host_rows(service_->database_url())) {
      if (row.pooled && row.digest == old_digest && row.status != "error") {
        old_members.push_back(row.id + " " + row.status);
      }
    }
    if (!old_members.empty()) {
      std::this_thread::sleep_for(500ms);  // polling, not timing
    }
  } while (!old_members.empty() && steady::now() < until);
  EXPECT_EQ(old_members, std::vector<std::string>{});
}

}  // namespace
}  // namespace litterbox::e2e_test
