#include "tests/e2e/api/e2e_support.hpp"

#include "hypervisor/libvirt/forward_port.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <netinet/in.h>
#include <ostream>
#include <random>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace litterbox::e2e_test {
namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

constexpr const char* k_token = "e2e-token-3f9c1a7d";
constexpr const char* k_path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
// How often a running child is checked; the wait itself is bounded by the caller's timeout.
constexpr auto k_poll_interval = std::chrono::milliseconds(20);

fs::path make_temp_dir(const std::string& prefix) {
  std::string pattern = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
  }
  ::chmod(pattern.c_str(), 0755);
  return pattern;
}

}  // namespace

std::string required_env(const char* name, const char* what_sets_it) {
  const char* v = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): read before threads
  if (v == nullptr || *v == '\0') {
    throw std::runtime_error(std::string("environment variable ") + name +
                             " is not set; it is required by the e2e suite (" + what_sets_it + ")");
  }
  return v;
}

std::string optional_env(const char* name) {
  const char* v = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): read before threads
  return v == nullptr ? std::string() : std::string(v);
}

temp_dir::temp_dir(const std::string& prefix) : path_(make_temp_dir(prefix)) {}

temp_dir::~temp_dir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::ostream& operator<<(std::ostream& os, const process_result& r) {
  os << "exit code " << r.exit_code << (r.timed_out ? " (timed out)" : "") << "\n--- stdout ---\n"
     << r.out << "\n--- stderr ---\n"
     << r.err;
  return os;
}

process_result run_process(const std::vector<std::string>& argv,
                           const std::vector<std::string>& env, std::chrono::seconds timeout) {
  if (argv.empty()) {
    throw std::runtime_error("run_process: empty argv");
  }
  const temp_dir io("lb-e2e-run");
  const auto out_path = io.path() / "stdout";
  const auto err_path = io.path() / "stderr";
  std::vector<std::string> args = argv;
  std::vector<std::string> envs = env;
  std::vector<char*> c_argv;
  for (auto& a : args) {
    c_argv.push_back(a.data());
  }
  c_argv.push_back(nullptr);
  std::vector<char*> c_env;
  for (auto& e : envs) {
    c_env.push_back(e.data());
  }
  c_env.push_back(nullptr);
  std::string path_value = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (const auto& e : env) {
    if (e.rfind("PATH=", 0) == 0) {
      path_value = e.substr(5);
    }
  }
  // Resolved before fork: after it only async-signal-safe calls are allowed.
  std::string program = args.front();
  if (program.find('/') == std::string::npos) {
    std::istringstream dirs(path_value);
    for (std::string dir; std::getline(dirs, dir, ':');) {
      const auto candidate = fs::path(dir) / program;
      if (::access(candidate.c_str(), X_OK) == 0) {
        program = candidate.string();
        break;
      }
    }
  }
  const int out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const int err_fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (out_fd < 0 || err_fd < 0 || null_fd < 0) {
    throw std::runtime_error(std::string("open: ") + std::strerror(errno));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) {
      ::_exit(127);
    }
    ::dup2(null_fd, STDIN_FILENO);
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(err_fd, STDERR_FILENO);
    ::close_range(3, ~0U, 0);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(program.c_str(), c_argv.data(), c_env.data());
    ::_exit(127);
  }
  ::close(out_fd);
  ::close(err_fd);
  ::close(null_fd);
  if (pid < 0) {
    throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  }
  process_result r;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (;;) {
    const pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid || (w < 0 && errno != EINTR)) {
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      r.timed_out = true;
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      break;
    }
    std::this_thread::sleep_for(k_poll_interval);
  }
  r.exit_code = WIFEXITED(status) && !r.timed_out ? WEXITSTATUS(status) : -1;
  r.out = read_whole_file(out_path);
  r.err = read_whole_file(err_path);
  if (r.exit_code == 127 && r.err.empty()) {
    r.err = "could not execute " + args.front();
  }
  return r;
}

void write_private_file(const fs::path& path, const std::string& data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    throw std::runtime_error("cannot create " + path.string() + ": " + std::strerror(errno));
  }
  const auto written = ::write(fd, data.data(), data.size());
  ::close(fd);
  if (written < 0 || static_cast<std::size_t>(written) != data.size()) {
    throw std::runtime_error("cannot write " + path.string());
  }
}

std::string read_whole_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

ssh_login make_ssh_login(const json& host, const fs::path& dir, const std::string& private_key) {
  ssh_login login;
  login.host = host.value("ssh_host", "");
  login.port = host.value("ssh_port", 0);
  login.user = host.value("ssh_username", "");
  login.known_hosts = dir / "known_hosts";
  login.identity = dir / "id";
  fs::create_directories(dir);  // callers may name a per-host subfolder of their work dir
  write_private_file(login.known_hosts, host.value("known_hosts", ""));
  std::string key = private_key;
  if (!key.empty() && key.back() != '\n') {
    key += '\n';  // OpenSSH refuses a private key file without its final newline
  }
  write_private_file(login.identity, key);
  return login;
}

process_result ssh_run(const ssh_login& login, const std::string& remote_command,
                       std::chrono::seconds timeout) {
  const auto home = login.known_hosts.parent_path();
  return run_process({"ssh",
                      "-F",
                      "/dev/null",
                      "-o",
                      "StrictHostKeyChecking=yes",
                      "-o",
                      "UserKnownHostsFile=" + login.known_hosts.string(),
                      "-o",
                      "GlobalKnownHostsFile=/dev/null",
                      "-o",
                      "IdentitiesOnly=yes",
                      "-o",
                      "IdentityAgent=none",
                      "-o",
                      "BatchMode=yes",
                      "-o",
                      "ConnectTimeout=30",
                      "-o",
                      "LogLevel=ERROR",
                      "-i",
                      login.identity.string(),
                      "-p",
                      std::to_string(login.port),
                      login.user + "@" + login.host,
                      "--",
                      remote_command},
                     {k_path, "HOME=" + home.string()}, timeout);
}

std::pair<fs::path, std::string> make_ed25519_key(const fs::path& dir) {
  const auto key = dir / "caller_key";
  const auto r = run_process(
      {"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e-caller", "-f", key.string()},
      {k_path, "HOME=" + dir.string()}, std::chrono::seconds(30));
  if (r.exit_code != 0) {
    std::ostringstream s;
    s << "ssh-keygen failed: " << r;
    throw std::runtime_error(s.str());
  }
  std::string pub = read_whole_file(key.string() + ".pub");
  while (!pub.empty() && (pub.back() == '\n' || pub.back() == '\r')) {
    pub.pop_back();
  }
  return {key, pub};
}

std::string libvirt_uri() {
  const auto uri = optional_env("LIBVIRT_URI");
  return uri.empty() ? "qemu:///system" : uri;
}

process_result virsh(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"virsh", "-q", "-c", libvirt_uri()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_process(argv, {k_path, "HOME=/root"}, std::chrono::seconds(60));
}

std::vector<std::string> libvirt_domains() {
  const auto r = virsh({"list", "--all", "--name"});
  if (r.exit_code != 0) {
    std::ostringstream s;
    s << "virsh list failed: " << r;
    throw std::runtime_error(s.str());
  }
  std::vector<std::string> names;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty()) {
      names.push_back(line);
    }
  }
  return names;
}

bool domain_exists(const std::string& name) {
  for (const auto& d : libvirt_domains()) {
    if (d == name) {
      return true;
    }
  }
  return false;
}

bool port_bindable(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return false;
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // The socket API takes a sockaddr*; sockaddr_in is layout-compatible by definition.
  const bool ok = ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

int database_port(const std::string& url) {
  static const std::regex uri_port(R"(^postgres(?:ql)?://[^/?]*:(\d+)(?:[/?]|$))");
  static const std::regex kv_port(R"((?:^|\s)port=(\d+))");
  std::smatch m;
  if (std::regex_search(url, m, uri_port) || std::regex_search(url, m, kv_port)) {
    return std::stoi(m[1].str());
  }
  return 5432;
}

std::string free_port_range(int count) {
  std::random_device seed;
  std::mt19937 gen(seed());
  std::uniform_int_distribution<int> base_of(20000, 60000 - count);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const int base = base_of(gen);
    // Ports the kernel hands out to outgoing connections (the tests' own HTTP and SSH
    // clients among them) would be taken now and then: the window is outside them, as
    // /doctor's ssh_ports check asks of a deployment.
    if (hypervisor::ephemeral_ports_within(base, base + count - 1).value_or(0) != 0) {
      continue;
    }
    bool all_free = true;
    for (int p = base; p < base + count && all_free; ++p) {
      all_free = port_bindable(p);
    }
    if (all_free) {
      return std::to_string(base) + "-" + std::to_string(base + count - 1);
    }
  }
  throw std::runtime_error("no free window of loopback ports for SSH forwards");
}

e2e_settings load_settings() {
  e2e_settings s;
  constexpr const char* by_script = "scripts/test exports it before the e2e label runs";
  s.database_url = required_env("LITTERBOX_TEST_DATABASE_URL", by_script);
  s.image = required_env("LITTERBOX_E2E_IMAGE",
                         "scripts/test pushes the reference image to a loopback registry and "
                         "exports its reference");
  s.state_dir = required_env("LITTERBOX_STATE_DIR", by_script);
  s.registry = optional_env("LITTERBOX_REGISTRY_ADDR");
  if (s.registry.empty()) {
    s.registry = s.image.substr(0, s.image.find('/'));
  }
  s.kernel = optional_env("LITTERBOX_KERNEL");
  s.initrd = optional_env("LITTERBOX_INITRD");
  return s;
}

e2e_service::e2e_service(std::vector<std::string> extra_args)
    : e2e_service(std::move(extra_args), fs::path()) {}

e2e_service::e2e_service(std::vector<std::string> extra_args, const fs::path& state_dir)
    : settings_(load_settings()) {
  fs::create_directories(state_dir.empty() ? fs::path(settings_.state_dir) : state_dir);
  if (!state_dir.empty()) {
    settings_.state_dir = state_dir.string();
    ::chmod(settings_.state_dir.c_str(), 0755);  // the libvirt-qemu user reads guests' files
  }
  ssh_ports_ = free_port_range(16);
  db_ = std::make_unique<test::test_database>(settings_.database_url);
  const auto help = run_process({LB_LITTERBOXD_PATH, "serve", "--help"}, {k_path}, 30s);
  owner_configurable_ = help.out.find("LITTERBOX_OWNER") != std::string::npos;
  if (owner_configurable_) {
    owner_ = "litterbox-e2e-" + db_->name();
  }
  test::litterboxd_options o;
  o.binary = LB_LITTERBOXD_PATH;
  o.database_url = db_->url();
  o.service_tokens = {k_token};
  o.hypervisor = "libvirt";
  o.args = std::move(extra_args);
  for (const auto& e : environment()) {
    const auto eq = e.find('=');
    const auto name = e.substr(0, eq);
    if (name != "PATH" && name != "DATABASE_URL" && name != "SERVICE_TOKENS") {
      o.env.emplace_back(name, e.substr(eq + 1));
    }
  }
  // Start-up connects to libvirt and may install the guest firewall rule.
  o.start_timeout = std::chrono::seconds(120);
  options_ = o;
  server_ = std::make_unique<test::litterboxd_process>(std::move(o));
  // These suites run many guests at once on a small machine (twenty concurrent creates, a
  // pool refilling beside them); TCG guests touch a fraction of their memory. Placement is
  // not what they test: the node they registered gets room for all of them.
  const auto sized =
      run_process({LB_LITTERBOXD_PATH, "node", "set", libvirt_uri(), "--memory-overcommit", "8",
                   "--cpu-overcommit", "64", "--database-url", db_->url()},
                  {k_path}, 30s);
  if (sized.exit_code != 0) {
    throw std::runtime_error("cannot size the e2e node: " + sized.err);
  }
  // A blocking create waits for a whole TCG boot, two of them at once on a busy machine.
  http_ =
      std::make_unique<test::http_client>("127.0.0.1", server_->port(), std::chrono::seconds(1200));
}

void e2e_service::stop_server() {
  http_.reset();
  if (server_) {
    server_->stop();
  }
  server_.reset();
}

void e2e_service::start_server() {
  server_ = std::make_unique<test::litterboxd_process>(options_);
  http_ =
      std::make_unique<test::http_client>("127.0.0.1", server_->port(), std::chrono::seconds(1200));
}

e2e_service::~e2e_service() {
  http_.reset();
  server_.reset();
  db_.reset();
}

const std::string& e2e_service::database_url() const {
  return db_->url();
}

void e2e_service::kill_and_restart() {
  server_->kill();
  server_.reset();
  server_ = std::make_unique<test::litterboxd_process>(options_);
  http_ = std::make_unique<test::http_client>("127.0.0.1", server_->port(), http_->timeout());
}

std::string e2e_service::url() const {
  return "http://127.0.0.1:" + std::to_string(server_->port());
}

std::string e2e_service::token() {
  return k_token;
}

std::vector<test::http_header> e2e_service::auth(std::vector<test::http_header> more) {
  more.emplace_back("Authorization", std::string("Bearer ") + k_token);
  return more;
}

std::vector<std::string> e2e_service::environment() const {
  std::vector<std::string> env{k_path,
                               "HOME=/root",
                               "DATABASE_URL=" + db_->url(),
                               std::string("SERVICE_TOKENS=") + k_token,
                               "LITTERBOX_STATE_DIR=" + settings_.state_dir,
                               "LITTERBOX_DEFAULT_IMAGE=" + settings_.image,
                               "LITTERBOX_INSECURE_REGISTRIES=" + settings_.registry,
                               "LITTERBOX_SSH_HOST=127.0.0.1",
                               "LITTERBOX_SSH_PORTS=" + ssh_ports_,
                               "LITTERBOX_ACCEL=tcg",
                               "LIBVIRT_URI=" + libvirt_uri(),
                               "PROVISION_TIMEOUT=1100",
                               "LITTERBOX_LOG_LEVEL=info"};
  if (owner_configurable_) {
    env.push_back("LITTERBOX_OWNER=" + owner_);
  }
  if (!settings_.kernel.empty()) {
    env.push_back("LITTERBOX_KERNEL=" + settings_.kernel);
  }
  if (!settings_.initrd.empty()) {
    env.push_back("LITTERBOX_INITRD=" + settings_.initrd);
  }
  if (const auto tmp = optional_env("TMPDIR"); !tmp.empty()) {
    env.push_back("TMPDIR=" + tmp);
  }
  return env;
}

process_result e2e_service::reap(std::chrono::seconds timeout) const {
  return run_process({LB_LITTERBOXD_PATH, "reap", "--hypervisor=libvirt"}, environment(), timeout);
}

fs::path e2e_service::host_dir(const std::string& host_id) const {
  return fs::path(settings_.state_dir) / "vms" / host_id;
}

test::http_response e2e_service::create(const json& body) const {
  return http_->post("/hosts", body.dump(), auth({{"Content-Type", "application/json"}}));
}

test::http_response e2e_service::get(const std::string& id) const {
  return http_->get("/hosts/" + id, auth());
}

test::http_response e2e_service::remove(const std::string& id) const {
  return http_->del("/hosts/" + id, auth());
}

json body_json(const test::http_response& r) {
  return json::parse(r.body, nullptr, false);
}

std::vector<std::string> leftovers(const e2e_service& service, const json& host) {
  std::vector<std::string> left;
  const auto id = host.value("id", "");
  const auto name = host.value("name", "");
  if (domain_exists(name)) {
    left.push_back("libvirt domain " + name + " still exists");
  }
  std::error_code ec;
  if (fs::exists(service.host_dir(id), ec)) {
    left.push_back("files remain under " + service.host_dir(id).string());
  }
  if (const int port = host.value("ssh_port", 0); port > 0 && !port_bindable(port)) {
    left.push_back("SSH port " + std::to_string(port) + " is still held");
  }
  if (const auto r = service.get(id); r.status != 404) {
    left.push_back("GET /hosts/" + id + " answered " + std::to_string(r.status) + ", not 404");
  }
  return left;
}

}  // namespace litterbox::e2e_test
