#include "base/process.hpp"

#include "base/assert.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace litterbox {
namespace {

constexpr std::size_t k_capture_limit = std::size_t{1} << 20;
constexpr const char* k_default_path =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
// Without a pidfd (kernels before 5.3) the exit of a child that closed its pipes early is
// noticed by polling at this pace.
constexpr int k_exit_poll_ms = 20;

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

error os_error(const std::string& what, const std::string& tool, int err) {
  return make_error(std::error_code(err, std::generic_category()),
                    what + " " + tool + ": " + std::strerror(err));
}

/// True once `pid` has exited. Does not reap it: the zombie keeps its pid, and so its process
/// group id, ours until the final waitpid, so a kill of the group can never hit a stranger.
bool has_exited(pid_t pid) {
  for (;;) {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0) {
      return info.si_pid == pid;
    }
    if (errno != EINTR) {
      // ECHILD: reaped elsewhere (SIGCHLD ignored); there is nothing left to wait for.
      return true;
    }
  }
}

}  // namespace

std::vector<std::string> child_environment(const std::vector<std::string>& pass_env) {
  const auto from_here = [](const char* name, const char* fallback) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    if (v != nullptr && *v != '\0') {
      return std::string(name) + "=" + v;
    }
    if (fallback != nullptr) {
      return std::string(name) + "=" + fallback;
    }
    return std::nullopt;
  };
  std::vector<std::string> env;
  env.push_back(*from_here("PATH", k_default_path));
  env.push_back(*from_here("HOME", "/"));
  if (auto tmp = from_here("TMPDIR", nullptr)) {
    env.push_back(std::move(*tmp));
  }
  env.emplace_back("LANG=C.UTF-8");
  env.emplace_back("LC_ALL=C.UTF-8");
  for (const auto& name : pass_env) {
    const auto fixed = std::string_view(name);
    if (fixed.empty() || fixed.find('=') != std::string_view::npos || fixed == "PATH" ||
        fixed == "HOME" || fixed == "TMPDIR" || fixed == "LANG" || fixed == "LC_ALL") {
      continue;
    }
    if (const char* v = std::getenv(name.c_str()); v != nullptr) {
      env.push_back(name + "=" + v);
    }
  }
  return env;
}

result<process_output> run_process(const std::vector<std::string>& argv,
                                   std::chrono::milliseconds timeout) {
  return run_process(argv, process_options{timeout, {}});
}

result<process_output> run_process(const std::vector<std::string>& argv,
                                   const process_options& options) {
  LB_ASSERT(!argv.empty());
  std::array<int, 2> out_pipe{-1, -1};
  std::array<int, 2> err_pipe{-1, -1};
  if (::pipe2(out_pipe.data(), O_CLOEXEC) != 0) {
    return os_error("cannot run", argv[0], errno);
  }
  fd_guard out_read{out_pipe[0]};
  fd_guard out_write{out_pipe[1]};
  if (::pipe2(err_pipe.data(), O_CLOEXEC) != 0) {
    return os_error("cannot run", argv[0], errno);
  }
  fd_guard err_read{err_pipe[0]};
  fd_guard err_write{err_pipe[1]};

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_write.fd, 1);
  posix_spawn_file_actions_adddup2(&actions, err_write.fd, 2);
  // Descriptors opened without O_CLOEXEC (by a library) must not reach the tool either.
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Its own process group, so a kill at the deadline also reaches helpers the tool started;
  // default signal dispositions and an empty mask, whatever this process blocks or ignores.
  sigset_t none;
  sigset_t all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);

  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) {
    args.push_back(const_cast<char*>(a.c_str()));
  }
  args.push_back(nullptr);
  auto env_strings = child_environment(options.pass_env);
  std::vector<char*> env;
  env.reserve(env_strings.size() + 1);
  for (auto& e : env_strings) {
    env.push_back(e.data());
  }
  env.push_back(nullptr);

  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, argv[0].c_str(), &actions, &attr, args.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return os_error("cannot run", argv[0], rc);
  }
  out_write.reset();
  err_write.reset();
  // Readable once the child has exited. (A raw syscall: Debian 12's <sys/pidfd.h> declares
  // pidfd_open without C linkage.)
  fd_guard exited{static_cast<int>(::syscall(SYS_pidfd_open, pid, 0))};

  process_output result_out;
  const auto deadline = std::chrono::steady_clock::now() + options.timeout;
  std::array<char, 65536> buf{};
  bool out_open = true;
  bool err_open = true;
  bool running = true;
  while (out_open || err_open || running) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      result_out.timed_out = true;
      ::kill(-pid, SIGKILL);
      break;
    }
    std::array<pollfd, 3> fds{{{out_open ? out_read.fd : -1, POLLIN, 0},
                               {err_open ? err_read.fd : -1, POLLIN, 0},
                               {running ? exited.fd : -1, POLLIN, 0}}};
    long long wait_ms = std::min<long long>(left.count(), 60'000);
    if (running && exited.fd < 0) {
      wait_ms = std::min<long long>(wait_ms, k_exit_poll_ms);
    }
    const int n = ::poll(fds.data(), fds.size(), static_cast<int>(wait_ms));
    if (n < 0 && errno != EINTR) {
      ::kill(-pid, SIGKILL);
      break;
    }
    for (std::size_t i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) {
        continue;
      }
      const ssize_t got = ::read(fds[i].fd, buf.data(), buf.size());
      if (got < 0 && (errno == EINTR || errno == EAGAIN)) {
        continue;
      }
      if (got <= 0) {
        (i == 0 ? out_open : err_open) = false;
        continue;
      }
      std::string& sink = i == 0 ? result_out.out : result_out.err;
      const auto room = k_capture_limit - std::min(k_capture_limit, sink.size());
      sink.append(buf.data(), std::min(room, static_cast<std::size_t>(got)));
    }
    if (running && (exited.fd < 0 || fds[2].revents != 0)) {
      running = !has_exited(pid);
    }
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno == ECHILD) {
      break;
    }
    if (errno != EINTR) {
      return os_error("lost track of", argv[0], errno);
    }
  }
  if (WIFEXITED(status)) {
    result_out.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result_out.exit_code = 128 + WTERMSIG(status);
  }
  return result_out;
}

std::string process_failure_text(const result<process_output>& r) {
  if (!r) {
    return r.error().message;
  }
  if (r->timed_out) {
    return "timed out";
  }
  return r->err.substr(0, 300);
}

}  // namespace litterbox
