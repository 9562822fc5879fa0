#include "base/process.hpp"
#include "tests/integration/api/api_fixture.hpp"
#include "tests/support/pg_database.hpp"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace litterbox::test::api {
namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

std::string raw_get(std::string_view target, std::string_view method = "GET") {
  return std::string(method) + " " + std::string(target) + " HTTP/1.1\r\nHost: t\r\n\r\n";
}

/// utime + stime of `pid`, in clock ticks.
long cpu_ticks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  std::istringstream fields(line.substr(line.rfind(')') + 2));
  std::string field;
  long utime = 0;
  long stime = 0;
  for (int i = 3; fields >> field; ++i) {
    if (i == 14) {
      utime = std::stol(field);
    } else if (i == 15) {
      stime = std::stol(field);
      break;
    }
  }
  return utime + stime;
}

/// The highest descriptor number `pid` has open.
int highest_fd(pid_t pid) {
  int highest = -1;
  for (const auto& e :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    highest = std::max(highest, std::stoi(e.path().filename().string()));
  }
  return highest;
}

// A 10 MiB body, ten times the default LITTERBOX_MAX_BODY_BYTES.
constexpr std::size_t k_big_body = 10 * 1024 * 1024;

class bounds : public api_test {};

TEST_F(bounds, RandomMethodsShareOneMetricsLabel) {
  for (int i = 0; i < 20; ++i) {
    const auto r = client().send_raw(raw_get("/healthz", "XMETHOD" + std::to_string(i)));
    EXPECT_NE(r.status, 0) << r.error;
  }
  const auto metrics = client().get("/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_EQ(metrics.body.find("XMETHOD"), std::string::npos) << metrics.body;
  EXPECT_NE(metrics.body.find("method=\"other\""), std::string::npos) << metrics.body;
  // Routes are labelled by template, never by the raw path.
  const auto miss = client().get("/hosts/0190c0de-0000-7000-8000-00000000abcd", {bearer()});
  EXPECT_EQ(miss.status, 404);
  EXPECT_EQ(client().get("/no-such-path-4711", {bearer()}).status, 404);
  const auto after = client().get("/metrics").body;
  EXPECT_EQ(after.find("0190c0de"), std::string::npos);
  EXPECT_EQ(after.find("no-such-path-4711"), std::string::npos);
  EXPECT_NE(after.find("route=\"/hosts/{host_id}\""), std::string::npos);
}

TEST_F(bounds, OversizedBodyWrittenInFullStillGetsThe413) {
  http_connection c("127.0.0.1", client().port(), client().timeout());
  ASSERT_TRUE(c.connected()) << c.error();
  ASSERT_TRUE(c.write("POST /hosts HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                      std::string(k_token) + "\r\nContent-Type: application/json\r\n" +
                      "Content-Length: " + std::to_string(k_big_body) + "\r\n\r\n"));
  // Blocking writes of the whole body, and only then a read (what httpx does).
  ASSERT_TRUE(c.write(std::string(k_big_body, ' '))) << c.error();
  const auto r = c.read_response();
  expect_error(r, 413, "request body too large", "TOO_LARGE");
}

TEST_F(bounds, OversizedUnauthenticatedBodyWrittenInFullStillGetsThe401) {
  http_connection c("127.0.0.1", client().port(), client().timeout());
  ASSERT_TRUE(c.connected()) << c.error();
  ASSERT_TRUE(c.write("POST /hosts HTTP/1.1\r\nHost: t\r\nContent-Length: " +
                      std::to_string(k_big_body) + "\r\n\r\n"));
  ASSERT_TRUE(c.write(std::string(k_big_body, ' '))) << c.error();
  EXPECT_EQ(c.read_response().status, 401);
}

TEST_F(bounds, OversizedHeadFollowedByMoreDataStillGetsThe431) {
  http_connection c("127.0.0.1", client().port(), client().timeout());
  ASSERT_TRUE(c.connected()) << c.error();
  // Over the 64 KiB header limit, then a body the server never reads.
  ASSERT_TRUE(
      c.write("POST /hosts HTTP/1.1\r\nHost: t\r\nX-Filler: " + std::string(128 * 1024, 'a') +
              "\r\nContent-Length: " + std::to_string(k_big_body) + "\r\n\r\n"));
  ASSERT_TRUE(c.write(std::string(k_big_body, ' '))) << c.error();
  EXPECT_EQ(c.read_response().status, 431);
}

TEST_F(bounds, PythonHttpClientSendingAnOversizedBodyReadsThe413) {
  // Python's http.client (what urllib and many SDKs build on) sends the whole body before it
  // reads: with an abrupt close it gets BrokenPipeError instead of the answer.
  const std::string script =
      "import http.client, sys\n"
      "c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]), timeout=30)\n"
      "c.request('POST', '/hosts', body=b' ' * (10 * 1024 * 1024), headers={\n"
      "    'Authorization': 'Bearer ' + sys.argv[2], 'Content-Type': 'application/json'})\n"
      "r = c.getresponse()\n"
      "print(r.status, r.read().decode())\n";
  const auto r = run_process(
      {"python3", "-c", script, std::to_string(client().port()), std::string(k_token)}, 60s);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->exit_code, 0) << r->err;
  EXPECT_EQ(r->out.rfind("413 ", 0), 0U) << r->out << r->err;
  EXPECT_NE(r->out.find("TOO_LARGE"), std::string::npos) << r->out;
}

constexpr int k_max_connections = 4;

class connection_cap : public api_test {
 protected:
  static void SetUpTestSuite() {
    auto args = default_args();
    set_arg(args, "--max-connections", std::to_string(k_max_connections));
    start_server(std::move(args));
  }
};

TEST_F(connection_cap, ConnectionsOverTheCapGet503CapacityAndServiceResumesWhenOneCloses) {
  std::vector<std::unique_ptr<http_connection>> held;
  for (int i = 0; i < k_max_connections; ++i) {
    auto c = std::make_unique<http_connection>("127.0.0.1", client().port(), client().timeout());
    ASSERT_TRUE(c->connected()) << c->error();
    // Keep-alive: the connection stays open and counted after its answer.
    ASSERT_TRUE(c->write(raw_get("/healthz")));
    ASSERT_EQ(c->read_response().status, 200);
    held.push_back(std::move(c));
  }
  const auto over = client().get("/healthz");
  expect_error(over, 503, "too many connections", "CAPACITY");
  EXPECT_TRUE(over.header("Retry-After").has_value()) << over;

  held.front()->close();
  held.erase(held.begin());
  // The server notices the close asynchronously; a bounded retry, no fixed pause.
  const auto until = steady::now() + 10s;
  int status = 0;
  while (status != 200 && steady::now() < until) {
    status = client().get("/healthz").status;
    ASSERT_TRUE(status == 200 || status == 503) << status;
  }
  EXPECT_EQ(status, 200);
}

class descriptor_exhaustion : public api_test {};

TEST_F(descriptor_exhaustion, OutOfDescriptorsNeitherSpinsNorDiesAndServesAgainOnceFdsFree) {
  const pid_t pid = process().pid();
  rlimit original{};
  ASSERT_EQ(::prlimit(pid, RLIMIT_NOFILE, nullptr, &original), 0);
  // No descriptor above those open now: every further accept fails with EMFILE (after the
  // holes below the highest one, if any, are filled by the first connections).
  const rlimit tight{static_cast<rlim_t>(highest_fd(pid) + 1), original.rlim_max};
  ASSERT_EQ(::prlimit(pid, RLIMIT_NOFILE, &tight, nullptr), 0);

  std::vector<std::unique_ptr<http_connection>> held;
  std::unique_ptr<http_connection> pending;
  for (int i = 0; i < 64 && !pending; ++i) {
    auto c = std::make_unique<http_connection>("127.0.0.1", client().port(), 2000ms);
    ASSERT_TRUE(c->connected()) << c->error();  // the kernel completes it into the backlog
    ASSERT_TRUE(c->write(raw_get("/healthz")));
    const auto r = c->read_response();
    if (r.status == 200) {
      held.push_back(std::move(c));
    } else {
      pending = std::move(c);
    }
  }
  ASSERT_TRUE(pending) << "the lowered limit never made accept fail";

  // While accept keeps failing, the process must stay (nearly) idle: a loop retrying the
  // failed accept at once burns a whole core.
  const long ticks_per_s = ::sysconf(_SC_CLK_TCK);
  const long before = cpu_ticks(pid);
  const auto window_start = steady::now();
  http_connection observer("127.0.0.1", client().port(), 1500ms);
  ASSERT_TRUE(observer.connected());
  observer.wait_closed(1500ms);  // the observation window; this connection is backlogged too
  const double seconds = std::chrono::duration<double>(steady::now() - window_start).count();
  const double cpu =
      static_cast<double>(cpu_ticks(pid) - before) / static_cast<double>(ticks_per_s);
  EXPECT_LT(cpu, 0.25 * seconds) << cpu << " s of CPU in " << seconds << " s";
  EXPECT_TRUE(process().running()) << process().output_tail();

  ASSERT_EQ(::prlimit(pid, RLIMIT_NOFILE, &original, nullptr), 0);
  held.clear();
  // The backlogged request is accepted and answered once descriptors are free again.
  http_connection late("127.0.0.1", client().port(), 10s);
  ASSERT_TRUE(late.connected());
  ASSERT_TRUE(late.write(raw_get("/healthz")));
  EXPECT_EQ(late.read_response().status, 200);
  EXPECT_NE(process().output().find("accept failed"), std::string::npos);
}

constexpr int k_stuck_provision_timeout_s = 1;
constexpr int k_stuck_create_ms = 20'000;

class stuck_create : public api_test {
 protected:
  static void SetUpTestSuite() {
    auto args = default_args();
    set_arg(args, "--provision-timeout", std::to_string(k_stuck_provision_timeout_s));
    // create_vm of the fake blocks far past PROVISION_TIMEOUT: the owner is stuck.
    set_arg(args, "--fake-create-delay-ms", std::to_string(k_stuck_create_ms));
    start_server(std::move(args));
  }
};

TEST_F(stuck_create, ReplayOfAStuckCreateAnswersAtTheCreatesDeadlineInsteadOfWaiting) {
  const std::vector<http_header> key{{"Idempotency-Key", "stuck-create-replay-1"}};
  auto async_headers = key;
  async_headers.emplace_back("Prefer", "respond-async");
  const auto first = create("{}", async_headers);
  ASSERT_EQ(first.status, 202) << first;
  const auto id = body_json(first)["id"].get<std::string>();

  const auto started = steady::now();
  const auto replay = create("{}", key);
  const auto took = steady::now() - started;
  // created_at + PROVISION_TIMEOUT (1 s) + the 2 s grace, not the 20 s the create is stuck.
  EXPECT_LT(took, 10s) << replay;
  ASSERT_TRUE(replay.status == 202 || replay.status == 502) << replay;
  if (replay.status == 202) {
    const auto h = body_json(replay);
    EXPECT_EQ(h["id"], id);
    EXPECT_NE(h["status"], "active");
  }
}

// The secret-holding daemon runs as an unprivileged user here, so that "another process of
// the same user" is a real, unprivileged attacker (root could read anything anyway).
constexpr int k_nobody = 65534;

std::vector<std::string> as_nobody(std::vector<std::string> argv) {
  std::vector<std::string> out{"setpriv", "--reuid=" + std::to_string(k_nobody),
                               "--regid=" + std::to_string(k_nobody), "--clear-groups"};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

TEST(secrets, DaemonIsNotDumpableSoSameUserProcessesCannotReadItsEnvironmentOrMemory) {
  test_database db;
  std::string tmpl = (std::filesystem::temp_directory_path() / "lb-dumpable-XXXXXX").string();
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  const std::filesystem::path dir(tmpl);
  const auto state = dir / "state";
  std::filesystem::create_directory(state);
  ASSERT_EQ(::chown(state.c_str(), k_nobody, k_nobody), 0);
  ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);
  // litterboxd_process runs `<binary> serve … --port-file <dir>/port …`: the wrapper lets
  // the unprivileged daemon write its port file, then becomes it (same pid).
  const auto wrapper = dir / "litterboxd-as-nobody";
  {
    std::ofstream w(wrapper);
    w << "#!/bin/sh\nchown " << k_nobody
      << " \"$(dirname \"$6\")\"\nexec setpriv --reuid=" << k_nobody << " --regid=" << k_nobody
      << " --clear-groups " << LB_LITTERBOXD_PATH << " \"$@\"\n";
  }
  ASSERT_EQ(::chmod(wrapper.c_str(), 0755), 0);
  litterboxd_options o;
  o.binary = wrapper;
  o.database_url = db.url();
  o.service_tokens = {std::string(k_token)};
  o.args = {"--state-dir", state.string()};
  auto daemon = std::make_unique<litterboxd_process>(std::move(o));
  const std::string proc = "/proc/" + std::to_string(daemon->pid());

  // Control: a dumpable process of that user is readable by its peers, so the check below
  // is able to fail.
  const auto control = run_process(
      as_nobody({"sh", "-c",
                 "sleep 30 > /dev/null 2>&1 & p=$!; cat /proc/$p/environ > /dev/null && echo "
                 "readable; kill $p"}),
      10s);
  ASSERT_TRUE(control);
  ASSERT_EQ(control->out, "readable\n") << control->err;

  const auto environ = run_process(as_nobody({"cat", proc + "/environ"}), 10s);
  ASSERT_TRUE(environ);
  EXPECT_NE(environ->exit_code, 0);
  EXPECT_EQ(environ->out.find("SERVICE_TOKENS"), std::string::npos);
  EXPECT_NE(environ->err.find("Permission denied"), std::string::npos) << environ->err;
  const auto mem = run_process(as_nobody({"head", "-c", "1", proc + "/mem"}), 10s);
  ASSERT_TRUE(mem);
  EXPECT_NE(mem->exit_code, 0);
  // The kernel hands a non-dumpable process's /proc files to root.
  struct stat st {};
  ASSERT_EQ(::stat((proc + "/environ").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0U);
  EXPECT_TRUE(daemon->running()) << daemon->output_tail();

  daemon.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace litterbox::test::api
