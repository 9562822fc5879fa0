#include "tests/support/litterboxd_process.hpp"

#include "base/secret.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <netinet/in.h>
#include <signal.h>
#include <sstream>
#include <stdexcept>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace litterbox::test {
namespace {

using steady = std::chrono::steady_clock;

// How often start-up and exit are checked; the waits themselves are bounded by deadlines.
constexpr auto k_poll_interval = std::chrono::milliseconds(10);

std::filesystem::path make_temp_dir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "lb-litterboxd-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
  }
  return pattern;
}

bool port_accepts(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return false;
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // The socket API takes a sockaddr*; sockaddr_in is layout-compatible by definition.
  const bool ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

/// The port in `text` if it is a whole decimal port number (surrounding whitespace allowed).
std::optional<std::uint16_t> parse_port(const std::string& text) {
  std::istringstream in(text);
  long value = 0;
  if (!(in >> value) || value <= 0 || value > 65535) {
    return std::nullopt;
  }
  std::string rest;
  in >> rest;
  if (!rest.empty()) {
    return std::nullopt;
  }
  return static_cast<std::uint16_t>(value);
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) {
    return "exited with code " + std::to_string(WEXITSTATUS(status));
  }
  if (WIFSIGNALED(status)) {
    return std::string("killed by signal ") + ::strsignal(WTERMSIG(status));
  }
  return "stopped";
}

/// True when `args` or `env` choose where the server keeps its state (or its fake VMs).
bool names_state_dir(const litterboxd_options& o) {
  const auto is_flag = [](const std::string& a) {
    return a == "--state-dir" || a == "--fake-state-dir" || a.starts_with("--state-dir=") ||
           a.starts_with("--fake-state-dir=");
  };
  const auto is_var = [](const std::pair<std::string, std::string>& e) {
    return e.first == "LITTERBOX_STATE_DIR" || e.first == "LITTERBOX_FAKE_STATE_DIR";
  };
  return std::any_of(o.args.begin(), o.args.end(), is_flag) ||
         std::any_of(o.env.begin(), o.env.end(), is_var);
}

}  // namespace

std::filesystem::path fake_node_dir(const std::string& database_url) {
  return std::filesystem::temp_directory_path() /
         ("lb-node-" + sha256_hex(database_url).substr(0, 16));
}

litterboxd_process::litterboxd_process(litterboxd_options options) {
  if (options.binary.empty() || !std::filesystem::exists(options.binary)) {
    throw std::runtime_error("litterboxd executable not found: '" + options.binary.string() +
                             "' (build the litterboxd target or set LITTERBOXD)");
  }
  dir_ = make_temp_dir();
  log_path_ = dir_ / "litterboxd.log";
  const auto port_file = dir_ / "port";

  std::vector<std::string> args{options.binary.string(),
                                "serve",
                                "--hypervisor=" + options.hypervisor,
                                "--listen",
                                "127.0.0.1:0",
                                "--port-file",
                                port_file.string()};
  args.insert(args.end(), options.args.begin(), options.args.end());
  std::string tokens;
  for (const auto& t : options.service_tokens) {
    tokens += (tokens.empty() ? "" : ",") + t;
  }
  // LITTERBOX_CONFIG=/dev/null: an empty configuration file, so that the machine's
  // /etc/litterbox/litterboxd.conf (written by scripts/up) never leaks into a test server.
  std::vector<std::string> env{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                               "DATABASE_URL=" + options.database_url, "SERVICE_TOKENS=" + tokens,
                               "LITTERBOX_CONFIG=/dev/null"};
  for (const auto& [k, v] : options.env) {
    env.push_back(k + "=" + v);
  }
  if (options.hypervisor == "fake" && !names_state_dir(options)) {
    env.push_back("LITTERBOX_FAKE_STATE_DIR=" + fake_node_dir(options.database_url).string());
  }
  // Every create boots unless a test asks for templates (LITTERBOX_TEMPLATES=on in `env`,
  // which comes first and so wins: getenv takes the first entry of a name): a template built
  // in the background would turn a test's later creates into clones behind its back.
  env.emplace_back("LITTERBOX_TEMPLATES=off");
  // Everything the child needs is prepared before fork: after it only async-signal-safe
  // calls are allowed (the test process has threads).
  std::vector<char*> argv;
  for (auto& a : args) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& e : env) {
    envp.push_back(e.data());
  }
  envp.push_back(nullptr);

  const int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (log_fd < 0 || null_fd < 0) {
    throw std::runtime_error(std::string("open: ") + std::strerror(errno));
  }
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) {
      ::_exit(127);
    }
    ::dup2(null_fd, STDIN_FILENO);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    ::close_range(3, ~0U, 0);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(log_fd);
  ::close(null_fd);
  if (pid_ < 0) {
    throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  }

  const auto deadline = steady::now() + options.start_timeout;
  for (;;) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_status_ = status;
      pid_ = -1;
      throw std::runtime_error("litterboxd " + describe_status(status) +
                               " before listening; output:\n" + output_tail());
    }
    if (const auto port = parse_port(read_file(port_file))) {
      // The file may be caught half-written; a port that accepts connections is the real one.
      if (port_accepts(*port)) {
        port_ = *port;
        return;
      }
    }
    if (steady::now() > deadline) {
      kill();
      throw std::runtime_error(
          "litterboxd wrote no usable port file within the start timeout; "
          "output:\n" +
          output_tail());
    }
    std::this_thread::sleep_for(k_poll_interval);
  }
}

litterboxd_process::~litterboxd_process() {
  stop();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

bool litterboxd_process::running() {
  if (pid_ <= 0) {
    return false;
  }
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    exit_status_ = status;
    pid_ = -1;
    return false;
  }
  return true;
}

std::optional<int> litterboxd_process::wait_exit(std::chrono::milliseconds timeout) {
  const auto deadline = steady::now() + timeout;
  while (running()) {
    if (steady::now() > deadline) {
      return std::nullopt;
    }
    std::this_thread::sleep_for(k_poll_interval);
  }
  return exit_status_;
}

std::optional<int> litterboxd_process::stop(std::chrono::milliseconds grace) {
  if (!running()) {
    return exit_status_;
  }
  ::kill(pid_, SIGTERM);
  if (const auto status = wait_exit(grace)) {
    return status;
  }
  return kill();
}

std::optional<int> litterboxd_process::kill() {
  if (!running()) {
    return exit_status_;
  }
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  exit_status_ = status;
  pid_ = -1;
  return exit_status_;
}

std::string litterboxd_process::state() {
  if (running()) {
    return "running";
  }
  return exit_status_ ? describe_status(*exit_status_) : "not started";
}

std::string litterboxd_process::output() const {
  return read_file(log_path_);
}

std::string litterboxd_process::output_tail(std::size_t max_bytes) const {
  auto text = output();
  if (text.size() > max_bytes) {
    text.erase(0, text.size() - max_bytes);
  }
  return text;
}

}  // namespace litterbox::test
