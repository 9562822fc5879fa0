// exec, cp and ssh against a real OpenSSH server on loopback: the host-key pinning, stream
// separation and byte-exact transfers are the SSH side's contract, and they do not need a VM.
// A socket stub plays the API and answers GET /hosts/{id} with a host pointing at that sshd.
#include "base/secret.hpp"
#include "schema/host.hpp"
#include "tests/integration/client/cli_runner.hpp"
#include "tests/integration/client/stub_server.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <csignal>
#include <fstream>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace litterbox::client::test {
namespace {

const std::string k_id = "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b";

int run_quiet(const std::vector<std::string>& args) {
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (auto& a : copy) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawnp(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
    return -1;
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

bool accepts(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

std::string first_line(const std::string& s) {
  return s.substr(0, s.find('\n'));
}

class CliOverSsh : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0U) << "this test runs sshd, which needs root";
    std::string tmpl = (std::filesystem::temp_directory_path() / "lb-ssh-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    std::filesystem::create_directories(dir_ / "tmp");
    std::filesystem::create_directories(dir_ / "remote");
    // sshd insists on its privilege separation directory.
    std::filesystem::create_directories("/run/sshd");
    ASSERT_EQ(run_quiet({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                         (dir_ / "host_key").string()}),
              0);
    ASSERT_EQ(run_quiet({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                         (dir_ / "user_key").string()}),
              0);
    std::filesystem::copy_file(dir_ / "user_key.pub", dir_ / "authorized_keys");
    port_ = free_loopback_port();
    std::ofstream(dir_ / "sshd_config")
        << "ListenAddress 127.0.0.1\nPort " << port_ << "\nHostKey " << (dir_ / "host_key").string()
        << "\nPidFile none\nAuthorizedKeysFile " << (dir_ / "authorized_keys").string()
        << "\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
           "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
           "Subsystem sftp internal-sftp\nLogLevel ERROR\n";
    std::vector<std::string> args{"/usr/sbin/sshd", "-D", "-e", "-f",
                                  (dir_ / "sshd_config").string()};
    std::vector<char*> argv;
    for (auto& a : args) {
      argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    ASSERT_EQ(posix_spawn(&sshd_, argv[0], nullptr, nullptr, argv.data(), environ), 0);
    // Readiness: sshd has no notification we can use without systemd, so poll the port
    // (bounded); nothing below depends on how long this took.
    bool up = false;
    for (int i = 0; i < 400 && !up; ++i) {
      up = accepts(port_);
      if (!up) {
        ::usleep(25000);
      }
    }
    ASSERT_TRUE(up) << "sshd did not start listening on " << port_;

    const std::string host_pub = first_line(slurp(dir_ / "host_key.pub"));
    pinned_ =
        "[127.0.0.1]:" + std::to_string(port_) + " " + host_pub.substr(0, host_pub.rfind(' '));
    const auto keys = dir_ / "data" / "litterbox" / "keys";
    std::filesystem::create_directories(keys);
    std::filesystem::copy_file(dir_ / "user_key", keys / k_id);
    ::chmod((keys / k_id).c_str(), 0600);
  }

  void TearDown() override {
    if (sshd_ > 0) {
      ::kill(sshd_, SIGTERM);
      ::waitpid(sshd_, nullptr, 0);
    }
    std::filesystem::remove_all(dir_);
  }

  std::string host_json(const std::string& known_hosts) const {
    schema::host h;
    h.id = k_id;
    h.name = schema::host_name_for(k_id);
    h.status = schema::host_status::active;
    h.provider = "libvirt";
    h.image = "img";
    h.cpus = 1;
    h.memory_mib = 512;
    h.ssh_host = "127.0.0.1";
    h.ssh_port = port_;
    h.ssh_username = "root";
    h.known_hosts = known_hosts;
    h.created_at = timestamp(std::chrono::seconds(1800000000));
    h.updated_at = h.created_at;
    return schema::to_json(h).dump();
  }

  cli_result run(const stub_server& api, const std::vector<std::string>& args,
                 const std::filesystem::path& stdin_file = "/dev/null") const {
    return run_cli(
        dir_,
        {"PATH=/usr/bin:/bin", "HOME=" + dir_.string(), "XDG_DATA_HOME=" + (dir_ / "data").string(),
         "TMPDIR=" + (dir_ / "tmp").string(), "SANDBOX_SERVICE_URL=" + api.url(),
         "SANDBOX_SERVICE_TOKEN=t"},
        args, stdin_file);
  }

  std::deque<stub_answer> answers(const std::string& known_hosts, int n = 4) const {
    std::deque<stub_answer> out;
    for (int i = 0; i < n; ++i) {
      out.push_back({200, host_json(known_hosts)});
    }
    return out;
  }

  std::filesystem::path dir_;
  int port_ = 0;
  pid_t sshd_ = -1;
  std::string pinned_;
};

TEST_F(CliOverSsh, ExecKeepsStdoutAndStderrApartAndReturnsTheRemoteExitCode) {
  stub_server api(answers(pinned_));
  const auto r = run(api, {"exec", k_id, "--", "sh", "-c", "echo out; echo err >&2; exit 7"});
  EXPECT_EQ(r.exit_code, 7) << r.err;
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
  const auto ok = run(api, {"exec", k_id, "--", "printf", "%s|", "a b", "it's"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(ok.out, "a b|it's|");  // each argument arrives as one word
}

TEST_F(CliOverSsh, ExecPassesStdinToTheCommandByteForByte) {
  stub_server api(answers(pinned_));
  std::string data(300 * 1024 + 17, '\0');  // more than one SSH window's worth
  random_bytes(data.data(), data.size());
  std::ofstream(dir_ / "stdin.bin", std::ios::binary) << data;
  const auto r = run(api, {"exec", k_id, "--", "cat"}, dir_ / "stdin.bin");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.size(), data.size());
  EXPECT_TRUE(r.out == data) << "stdin did not arrive unchanged";
  // A command that never reads stdin still ends the call when it exits.
  const auto ignored = run(api, {"exec", k_id, "--", "sh", "-c", "exit 3"}, dir_ / "stdin.bin");
  EXPECT_EQ(ignored.exit_code, 3) << ignored.err;
}

TEST_F(CliOverSsh, CpCopiesBothWaysByteForByte) {
  stub_server api(answers(pinned_));
  std::string data(300 * 1024 + 17, '\0');
  random_bytes(data.data(), data.size());
  std::ofstream(dir_ / "payload.bin", std::ios::binary) << data;
  const auto remote = dir_ / "remote" / "payload.bin";
  auto r =
      run(api, {"cp", (dir_ / "payload.bin").string(), k_id + ":" + (dir_ / "remote").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(slurp(remote), data);
  r = run(api, {"cp", k_id + ":" + remote.string(), (dir_ / "back.bin").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(slurp(dir_ / "back.bin"), data);
  r = run(api, {"cp", k_id + ":" + (dir_ / "remote" / "absent").string(), (dir_ / "x").string()});
  EXPECT_EQ(r.exit_code, 255);
  EXPECT_TRUE(r.err.starts_with("litterbox: cannot open ")) << r.err;
}

TEST_F(CliOverSsh, SshUsesOpenSshWithOnlyThePinnedKeyAndCleansUp) {
  stub_server api(answers(pinned_));
  const auto r = run(api, {"ssh", k_id, "--", "echo", "hi"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "hi\n");
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "tmp")) << "temporary known_hosts left behind";
  const auto code = run(api, {"ssh", k_id, "--", "exit", "3"});
  EXPECT_EQ(code.exit_code, 3);
}

TEST_F(CliOverSsh, AnotherHostKeyIsRefusedByExecCpAndSsh) {
  // Pin the user's key instead of the server's: the server's real key is now unknown.
  const std::string other = first_line(slurp(dir_ / "user_key.pub"));
  const std::string wrong =
      "[127.0.0.1]:" + std::to_string(port_) + " " + other.substr(0, other.rfind(' '));
  stub_server api(answers(wrong, 6));
  auto r = run(api, {"exec", k_id, "--", "touch", (dir_ / "remote" / "ran").string()});
  EXPECT_EQ(r.exit_code, 255);
  EXPECT_NE(r.err.find("does not match the pinned key"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "remote" / "ran"));
  std::ofstream(dir_ / "f") << "x";
  r = run(api, {"cp", (dir_ / "f").string(), k_id + ":" + (dir_ / "remote").string()});
  EXPECT_EQ(r.exit_code, 255);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "remote" / "f"));
  r = run(api, {"ssh", k_id, "--", "touch", (dir_ / "remote" / "ran").string()});
  EXPECT_EQ(r.exit_code, 255);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "remote" / "ran"));
}

TEST_F(CliOverSsh, EmptyKnownHostsIsRefused) {
  stub_server api(answers(""));
  const auto r = run(api, {"exec", k_id, "--", "true"});
  EXPECT_EQ(r.exit_code, 255);
  EXPECT_TRUE(r.err.starts_with("litterbox: ")) << r.err;
}

}  // namespace
}  // namespace litterbox::client::test
