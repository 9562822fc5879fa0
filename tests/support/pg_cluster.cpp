#include "tests/support/pg_cluster.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <netinet/in.h>
#include <pwd.h>
#include <spawn.h>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/wait.h>
#include <system_error>
#include <unistd.h>

namespace litterbox::test {
namespace {

constexpr const char* bin_dir = "/usr/lib/postgresql/15/bin";

int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    throw std::runtime_error("socket() failed");
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot find a free loopback port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

void chown_tree(const std::filesystem::path& root, uid_t uid, gid_t gid) {
  if (::chown(root.c_str(), uid, gid) != 0) {
    throw std::runtime_error("chown " + root.string() + ": " +
                             std::generic_category().message(errno));
  }
  for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
    if (::lchown(entry.path().c_str(), uid, gid) != 0) {
      throw std::runtime_error("chown " + entry.path().string() + ": " +
                               std::generic_category().message(errno));
    }
  }
}

}  // namespace

test_cluster::test_cluster() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "lb-pgcluster-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    throw std::runtime_error("mkdtemp failed");
  }
  dir_ = tmpl;
  if (::geteuid() == 0) {
    const passwd* pw = ::getpwnam("postgres");  // NOLINT(concurrency-mt-unsafe): copied at once
    if (pw == nullptr) {
      throw std::runtime_error("running as root but there is no postgres user");
    }
    chown_tree(dir_, pw->pw_uid, pw->pw_gid);
  }
  port_ = free_loopback_port();
  run({std::string(bin_dir) + "/initdb", "-D", dir_ + "/data", "-U", "postgres", "--auth=trust",
       "-E", "UTF8", "--no-sync", "--no-instructions"});
  start();
}

test_cluster::~test_cluster() {
  try {
    if (running_) {
      stop();
    }
  } catch (const std::exception&) {
    // Best effort: the directory is removed below either way.
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void test_cluster::start() {
  // The socket directory is the cluster's own, so nothing is shared with other clusters.
  const std::string opts = "-p " + std::to_string(port_) +
                           " -c listen_addresses=127.0.0.1 -c unix_socket_directories=" + dir_ +
                           " -c fsync=off -c full_page_writes=off -c synchronous_commit=off";
  run({std::string(bin_dir) + "/pg_ctl", "-D", dir_ + "/data", "-l", dir_ + "/server.log", "-o",
       opts, "-w", "-t", "60", "start"});
  running_ = true;
}

void test_cluster::stop() {
  run({std::string(bin_dir) + "/pg_ctl", "-D", dir_ + "/data", "-m", "fast", "-w", "-t", "60",
       "stop"});
  running_ = false;
}

std::string test_cluster::url() const {
  return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/postgres";
}

void test_cluster::run(const std::vector<std::string>& command) const {
  std::vector<std::string> argv;
  if (::geteuid() == 0) {
    argv = {"/usr/sbin/runuser", "-u", "postgres", "--"};
  }
  argv.insert(argv.end(), command.begin(), command.end());
  std::vector<char*> cargv;
  cargv.reserve(argv.size() + 1);
  for (auto& a : argv) {
    cargv.push_back(a.data());
  }
  cargv.push_back(nullptr);

  // Tool chatter goes to a log in the cluster dir, not into the test output.
  const std::string log = dir_ + "/tools.log";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, cargv[0], &actions, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    throw std::runtime_error("cannot run " + argv[0] + ": " + std::generic_category().message(rc));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      throw std::runtime_error("waitpid failed");
    }
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error("command failed: " + command[0] + " " + command.back() + " (see " +
                             log + ")");
  }
}

}  // namespace litterbox::test
