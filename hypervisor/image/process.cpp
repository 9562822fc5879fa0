#include "hypervisor/image/process.hpp"

#include "base/assert.hpp"
#include "hypervisor/errc.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace litterbox::hypervisor::image {
namespace {

constexpr std::size_t k_capture_limit = std::size_t{1} << 20;

struct fd_guard {
  int fd = -1;
  ~fd_guard() { reset(); }
  void reset() {
    if (fd >= 0) {
      ::close(fd);
      fd = -1;
    }
  }
};

error spawn_error(const std::string& tool, int err) {
  return make_error(errc::internal, "could not run " + tool + ": " + std::strerror(err));
}

}  // namespace

result<process_output> run_process(const std::vector<std::string>& argv,
                                   std::chrono::milliseconds timeout) {
  LB_ASSERT(!argv.empty());
  std::array<int, 2> out_pipe{-1, -1};
  std::array<int, 2> err_pipe{-1, -1};
  if (::pipe2(out_pipe.data(), O_CLOEXEC) != 0) {
    return spawn_error(argv[0], errno);
  }
  fd_guard out_read{out_pipe[0]};
  fd_guard out_write{out_pipe[1]};
  if (::pipe2(err_pipe.data(), O_CLOEXEC) != 0) {
    return spawn_error(argv[0], errno);
  }
  fd_guard err_read{err_pipe[0]};
  fd_guard err_write{err_pipe[1]};

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_write.fd, 1);
  posix_spawn_file_actions_adddup2(&actions, err_write.fd, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Its own process group, so a time-boxed kill also reaches helpers the tool started.
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);

  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) {
    args.push_back(const_cast<char*>(a.c_str()));
  }
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, argv[0].c_str(), &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return spawn_error(argv[0], rc);
  }
  out_write.reset();
  err_write.reset();

  process_output result_out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::array<char, 65536> buf{};
  bool out_open = true;
  bool err_open = true;
  while (out_open || err_open) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      result_out.timed_out = true;
      ::kill(-pid, SIGKILL);
      break;
    }
    std::array<pollfd, 2> fds{
        {{out_open ? out_read.fd : -1, POLLIN, 0}, {err_open ? err_read.fd : -1, POLLIN, 0}}};
    const int n =
        ::poll(fds.data(), fds.size(), static_cast<int>(std::min<long long>(left.count(), 60'000)));
    if (n < 0 && errno != EINTR) {
      ::kill(-pid, SIGKILL);
      break;
    }
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) {
        continue;
      }
      const ssize_t got = ::read(fds[i].fd, buf.data(), buf.size());
      if (got <= 0) {
        (i == 0 ? out_open : err_open) = false;
        continue;
      }
      std::string& sink = i == 0 ? result_out.out : result_out.err;
      const auto room = k_capture_limit - std::min(k_capture_limit, sink.size());
      sink.append(buf.data(), std::min(room, static_cast<std::size_t>(got)));
    }
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      return make_error(errc::internal, "lost track of " + argv[0]);
    }
  }
  if (WIFEXITED(status)) {
    result_out.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result_out.exit_code = 128 + WTERMSIG(status);
  }
  return result_out;
}

}  // namespace litterbox::hypervisor::image
