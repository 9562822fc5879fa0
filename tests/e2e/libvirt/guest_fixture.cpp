#include "tests/e2e/libvirt/guest_fixture.hpp"

#include "base/process.hpp"
#include "base/secret.hpp"

#include <arpa/inet.h>
#include <array>
#include <cstdlib>
#include <fcntl.h>
#include <fstream>
#include <iterator>
#include <netinet/in.h>
#include <poll.h>
#include <stdexcept>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace litterbox::e2e {
namespace fs = std::filesystem;
namespace {

fs::path newest_in_boot(std::string_view prefix) {
  fs::path best;
  for (const auto& entry : fs::directory_iterator("/boot")) {
    const auto name = entry.path().filename().string();
    if (name.rfind(prefix, 0) == 0 && (best.empty() || entry.path() > best)) {
      best = entry.path();
    }
  }
  if (best.empty()) {
    throw std::runtime_error("no /boot/" + std::string(prefix) +
                             "* (apt-get install linux-image-amd64)");
  }
  return best;
}

fs::path from_env_or(const char* name, fs::path fallback) {
  if (const char* v = std::getenv(name); v != nullptr && *v != '\0') {
    return v;
  }
  return fallback;
}

std::string file_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {(std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()};
}

// Keyed by the recipe's content (the script and the guest-agent config it installs), so a
// changed recipe builds a fresh disk.
fs::path cache_dir() {
  const fs::path dir(LB_E2E_SOURCE_DIR);
  const std::string text = file_text(dir / "make-base-disk.sh") +
                           file_text(dir / "../../../cloud-init/images/files/qemu-ga.conf");
  return fs::path("/var/tmp/litterbox-e2e") / ("base-" + sha256_hex(text).substr(0, 12));
}

}  // namespace

fs::path guest_kernel() {
  return from_env_or("LITTERBOX_KERNEL", newest_in_boot("vmlinuz-"));
}
fs::path guest_initrd() {
  // The small initrd built next to the base disk (virtio + ext4 only) boots faster under TCG
  // than the distribution's generic one.
  (void)base_disk();
  const fs::path small = cache_dir() / "initrd.img";
  return from_env_or("LITTERBOX_INITRD", fs::exists(small) ? small : newest_in_boot("initrd.img-"));
}

fs::path base_disk() {
  if (const char* v = std::getenv("LITTERBOX_E2E_BASE_DISK"); v != nullptr && *v != '\0') {
    return v;
  }
  const fs::path cache = cache_dir();
  const fs::path disk = cache / "base.qcow2";
  if (fs::exists(disk) && fs::exists(cache / "initrd.img")) {
    return disk;
  }
  const fs::path script = fs::path(LB_E2E_SOURCE_DIR) / "make-base-disk.sh";
  // mmdebstrap of a minimal Debian: about a minute, far longer on a cold mirror.
  const auto r = run({"bash", script.string(), cache.string()}, std::chrono::minutes(30));
  if (r.exit_code != 0 || !fs::exists(disk)) {
    throw std::runtime_error("make-base-disk.sh failed:\n" + r.output);
  }
  return disk;
}

int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("cannot pick a loopback port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

command_result run(const std::vector<std::string>& argv, std::chrono::seconds timeout) {
  // Proxies reach mmdebstrap's apt; nothing else of the test's environment is needed.
  const auto r = run_process(argv, {timeout, {"http_proxy", "https_proxy", "no_proxy"}});
  if (!r) {
    return {-1, r.error().message};
  }
  std::string output = r->out + r->err;
  if (r->timed_out) {
    output += "\n(killed after " + std::to_string(timeout.count()) + " s)";
  }
  return {r->timed_out ? -1 : r->exit_code, std::move(output)};
}

void write_private_file(const fs::path& path, const std::string& data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || ::write(fd, data.data(), data.size()) != static_cast<ssize_t>(data.size())) {
    throw std::runtime_error("cannot write " + path.string());
  }
  ::close(fd);
}

}  // namespace litterbox::e2e

namespace litterbox::e2e {

struct proxy_sink::served {
  int fd = -1;
  int stop[2] = {-1, -1};
  std::thread thread;
};

proxy_sink::proxy_sink() = default;

proxy_sink::~proxy_sink() {
  std::vector<std::string> ids;
  {
    const std::lock_guard lock(mutex_);
    for (const auto& [id, s] : listeners_) {
      ids.push_back(id);
    }
  }
  for (const auto& id : ids) {
    remove_listener(id);
  }
}

void proxy_sink::add_listener(const std::string& host_id, int fd) {
  remove_listener(host_id);
  auto s = std::make_unique<served>();
  s->fd = fd;
  if (::pipe2(s->stop, O_CLOEXEC) != 0) {
    ::close(fd);
    return;
  }
  s->thread = std::thread([this, host_id, fd, stop = s->stop[0]] {
    for (;;) {
      std::array<pollfd, 2> p{pollfd{fd, POLLIN, 0}, pollfd{stop, POLLIN, 0}};
      if (::poll(p.data(), p.size(), -1) < 0 || (p[1].revents & POLLIN) != 0) {
        return;
      }
      const int c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) {
        continue;
      }
      std::string request;
      char buf[1024];
      while (request.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) {
          break;
        }
        request.append(buf, static_cast<std::size_t>(n));
      }
      const std::string reply =
          "HTTP/1.0 200 OK\r\nContent-Length: " + std::to_string(host_id.size()) + "\r\n\r\n" +
          host_id;
      (void)::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
      ::close(c);
      const std::lock_guard lock(mutex_);
      ++connections_[host_id];
    }
  });
  const std::lock_guard lock(mutex_);
  listeners_[host_id] = std::move(s);
}

void proxy_sink::remove_listener(std::string_view host_id) {
  std::unique_ptr<served> s;
  {
    const std::lock_guard lock(mutex_);
    auto it = listeners_.find(std::string(host_id));
    if (it == listeners_.end()) {
      return;
    }
    s = std::move(it->second);
    listeners_.erase(it);
    removed_.emplace_back(host_id);
  }
  (void)::write(s->stop[1], "x", 1);
  s->thread.join();
  ::close(s->stop[0]);
  ::close(s->stop[1]);
  ::close(s->fd);
}

int proxy_sink::connections(const std::string& host_id) {
  const std::lock_guard lock(mutex_);
  auto it = connections_.find(host_id);
  return it == connections_.end() ? 0 : it->second;
}

bool proxy_sink::listening(const std::string& host_id) {
  const std::lock_guard lock(mutex_);
  return listeners_.count(host_id) != 0;
}

std::vector<std::string> proxy_sink::removed() {
  const std::lock_guard lock(mutex_);
  return removed_;
}

std::string proxy_probe_command() {
  return "python3 -c '\n"
         "import socket\n"
         "print(socket.gethostbyname(\"proxy.litterbox.internal\"))\n"
         "s = socket.create_connection((\"proxy.litterbox.internal\", 80), timeout=20)\n"
         "s.sendall(b\"GET / HTTP/1.0\\r\\nHost: proxy.litterbox.internal\\r\\n\\r\\n\")\n"
         "r = b\"\"\n"
         "while True:\n"
         "    b = s.recv(4096)\n"
         "    if not b: break\n"
         "    r += b\n"
         "print(r.split(b\"\\r\\n\\r\\n\", 1)[1].decode())\n"
         "try:\n"
         "    socket.create_connection((\"169.254.77.1\", 81), timeout=3)\n"
         "    print(\"81 open\")\n"
         "except OSError:\n"
         "    print(\"81 closed\")\n"
         "'";
}

}  // namespace litterbox::e2e
