#include "hypervisor/fake/fake_driver.hpp"

#include "base/secret.hpp"
#include "hypervisor/errc.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <netinet/in.h>
#include <sstream>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace litterbox::hypervisor {

namespace fs = std::filesystem;
using std::chrono::steady_clock;

namespace {

constexpr std::string_view k_template_ext = ".template";

// `<state_dir>/<id>.template`: one field per line, so a restarted fake still knows its
// templates the way libvirt's state files outlive litterboxd.
std::string template_file(const template_key& key, const std::string& user) {
  std::ostringstream out;
  out << key.image_digest << '\n'
      << key.cpus << '\n'
      << key.memory_mib << '\n'
      << (key.disk_gb ? std::to_string(*key.disk_gb) : "-") << '\n'
      << user << '\n';
  return out.str();
}

bool parse_template_file(std::istream& in, template_key& key, std::string& user) {
  std::string disk;
  if (!std::getline(in, key.image_digest) || !(in >> key.cpus >> key.memory_mib >> disk) ||
      !(in >> user)) {
    return false;
  }
  if (disk == "-") {
    key.disk_gb.reset();
    return true;
  }
  int gb = 0;
  const auto [end, ec] = std::from_chars(disk.data(), disk.data() + disk.size(), gb);
  key.disk_gb = gb;
  return ec == std::errc() && end == disk.data() + disk.size();
}

// Written to a temporary name and renamed, so that another process reading the state dir
// never sees half a file.
void write_atomically(const fs::path& path, const std::string& text) {
  auto tmp = path;
  tmp += ".tmp";
  std::ofstream(tmp) << text;
  std::error_code ec;
  fs::rename(tmp, path, ec);
}

// `<state_dir>/<host id>.vm`: the VM's name and host key, all another process needs of it.
std::string vm_file(const vm_spec& spec) {
  return spec.name + '\n' + spec.host_key.public_line + '\n';
}

}  // namespace

namespace {

// The libvirt driver's rule: every resource is named from the id, so only hex and dashes.
bool valid_host_id(std::string_view id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '-';
  });
}

}  // namespace

namespace {

/// "type base64" of an authorized_keys or known_hosts style line, without its comment.
std::string key_material(std::string_view line) {
  const auto sp1 = line.find(' ');
  const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  return std::string(line.substr(0, sp2));
}

}  // namespace

fake_driver::fake_driver(fake_options options) : options_(std::move(options)) {
  if (options_.state_dir) {
    fs::create_directories(*options_.state_dir);
  }
  // VMs that outlived a process get their guest endpoints back, as the libvirt driver
  // re-adopts the links of the domains it owns (on a new port: the file says which).
  const std::lock_guard lock(mutex_);
  sync_state_dir();
  for (const auto& [id, vm] : vms_) {
    (void)open_guest_endpoint(id);
  }
}

void fake_driver::sync_state_dir() {
  if (!options_.state_dir) {
    return;
  }
  std::set<std::string> vm_ids;
  std::map<std::string, saved_template> saved;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(*options_.state_dir, ec)) {
    if (entry.path().extension() == ".vm") {
      vm_ids.insert(entry.path().stem().string());
      continue;
    }
    if (entry.path().extension() != k_template_ext) {
      continue;
    }
    std::ifstream in(entry.path());
    saved_template t;
    if (parse_template_file(in, t.key, t.ssh_username)) {
      saved[entry.path().stem().string()] = std::move(t);
    }
  }
  if (ec) {
    return;  // unreadable for now: keep the last view rather than lose every VM
  }
  // Gone from the directory: another process destroyed it.
  for (auto it = vms_.begin(); it != vms_.end();) {
    if (vm_ids.count(it->first) != 0) {
      ++it;
      continue;
    }
    close_guest_endpoint(it->first);
    stopped_.erase(it->first);
    clone_of_.erase(it->first);
    it = vms_.erase(it);
  }
  // New in the directory: another process made it (or an earlier one, before a restart).
  for (const auto& id : vm_ids) {
    if (vms_.count(id) != 0) {
      continue;
    }
    std::ifstream in(*options_.state_dir / (id + ".vm"));
    vm_spec vm;
    vm.host_id = id;
    std::getline(in, vm.name);
    std::getline(in, vm.host_key.public_line);
    vms_[id] = std::move(vm);
  }
  templates_ = std::move(saved);
}

std::optional<error> fake_driver::injected(fake_phase phase) {
  const std::lock_guard lock(mutex_);
  ++calls_[phase];
  if (const auto it = failures_.find(phase); it != failures_.end()) {
    return it->second;
  }
  return std::nullopt;
}

void fake_driver::wait(std::chrono::milliseconds d) const {
  if (d.count() > 0) {
    std::this_thread::sleep_for(d);
  }
}

result<std::string> fake_driver::resolve_image(std::string_view image) {
  if (auto e = injected(fake_phase::resolve_image)) {
    return *e;
  }
  if (image.find("missing") != std::string_view::npos) {
    return make_error(errc::image_not_found, "manifest unknown: " + std::string(image));
  }
  return digest_of(image);
}

std::string fake_driver::digest_of(std::string_view image) const {
  const std::lock_guard lock(mutex_);
  if (const auto it = retagged_.find(std::string(image)); it != retagged_.end()) {
    return it->second;
  }
  return "sha256:" + sha256_hex(image);
}

void fake_driver::retag(std::string image, std::string digest) {
  const std::lock_guard lock(mutex_);
  retagged_[std::move(image)] = std::move(digest);
}

result<std::string> fake_driver::prepare_image(
    std::string_view image, std::optional<std::chrono::steady_clock::time_point> /*deadline*/) {
  if (auto e = injected(fake_phase::prepare_image)) {
    return *e;
  }
  if (image.find("missing") != std::string_view::npos) {
    return make_error(errc::image_not_found, "manifest unknown: " + std::string(image));
  }
  if (image.find("corrupt") != std::string_view::npos) {
    return make_error(errc::image_corrupt, "blob digest mismatch in " + std::string(image));
  }
  const std::string digest = digest_of(image);
  std::unique_lock lock(mutex_);
  // Single flight, as the image store: a caller for a digest being converted waits for that
  // conversion instead of returning a base that is not there yet.
  bool announced = false;
  for (;;) {
    if (const auto it = digests_.find(digest); it != digests_.end()) {
      it->second = std::chrono::steady_clock::now();
      return digest;
    }
    if (converting_.count(digest) == 0) {
      break;
    }
    if (!announced && options_.on_wait) {
      announced = true;
      lock.unlock();
      options_.on_wait(digest);
      lock.lock();
      continue;
    }
    converted_.wait(lock);
  }
  converting_.insert(digest);
  ++conversions_;
  lock.unlock();
  wait(options_.pull_delay);
  if (options_.on_convert) {
    options_.on_convert(digest);
  }
  lock.lock();
  converting_.erase(digest);
  digests_[digest] = std::chrono::steady_clock::now();
  converted_.notify_all();
  return digest;
}

result<void> fake_driver::create_vm(const vm_spec& spec) {
  if (auto e = injected(fake_phase::create_vm)) {
    return *e;
  }
  if (auto e = port_taken(spec.ssh_port)) {
    return *e;
  }
  if (!valid_host_id(spec.host_id)) {
    return make_error(errc::vm_create_failed, "malformed host id");
  }
  wait(options_.create_delay);
  if (spec.image.find("fail-create") != std::string::npos) {
    return make_error(errc::vm_create_failed, "domain failed to start");
  }
  const std::lock_guard lock(mutex_);
  if (auto opened = open_guest_endpoint(spec.host_id); !opened) {
    return opened.error();
  }
  vms_[spec.host_id] = spec;
  if (options_.state_dir) {
    write_atomically(*options_.state_dir / (spec.host_id + ".vm"), vm_file(spec));
  }
  return {};
}

result<void> fake_driver::wait_ready(const vm_spec& spec,
                                     std::chrono::steady_clock::time_point deadline) {
  if (auto e = injected(fake_phase::wait_ready)) {
    return *e;
  }
  const bool never = spec.image.find("fail-boot") != std::string::npos ||
                     spec.image.find("slow-boot") != std::string::npos;
  const auto ready_at = std::chrono::steady_clock::now() + options_.boot_delay;
  if (never || ready_at > deadline) {
    std::this_thread::sleep_until(deadline);
    return make_error(errc::boot_timeout,
                      "guest did not report ready in time; console tail: [fake console]");
  }
  std::this_thread::sleep_until(ready_at);
  const std::lock_guard lock(mutex_);
  sync_state_dir();
  if (vms_.count(spec.host_id) == 0) {
    return make_error(errc::boot_failed, "domain is not running");
  }
  return {};
}

result<void> fake_driver::destroy(std::string_view host_id) {
  if (auto e = injected(fake_phase::destroy)) {
    return *e;
  }
  if (!valid_host_id(host_id)) {
    return make_error(errc::teardown_failed, "malformed host id");
  }
  wait(options_.destroy_delay);
  const std::lock_guard lock(mutex_);
  // A VM another process destroyed meanwhile is gone already, as for a second libvirt client.
  sync_state_dir();
  close_guest_endpoint(std::string(host_id));
  clone_of_.erase(std::string(host_id));
  stopped_.erase(std::string(host_id));
  bool existed = vms_.erase(std::string(host_id)) > 0;
  if (options_.state_dir) {
    std::error_code ec;
    existed = fs::remove(*options_.state_dir / (std::string(host_id) + ".vm"), ec) || existed;
  }
  if (existed) {
    ++destroyed_;
  }
  return {};
}

result<std::string> fake_driver::console(std::string_view host_id, std::size_t max_bytes) {
  if (!valid_host_id(host_id)) {
    return make_error(errc::not_found, "no console for this host");
  }
  const std::lock_guard lock(mutex_);
  sync_state_dir();
  const auto it = vms_.find(std::string(host_id));
  if (it == vms_.end()) {
    return make_error(errc::not_found, "no console for this host");
  }
  std::string text = "[fake] " + it->second.name + " booted\n";
  if (text.size() > max_bytes) {
    text = text.substr(text.size() - max_bytes);
  }
  return text;
}

result<std::vector<std::string>> fake_driver::list_owned() {
  const std::lock_guard lock(mutex_);
  sync_state_dir();
  std::vector<std::string> ids;
  for (const auto& [id, spec] : vms_) {
    ids.push_back(id);
  }
  return ids;
}

result<int> fake_driver::collect_images(const std::set<std::string>& in_use) {
  // The fake's "cache" has no size; forgetting unused digests makes the next create of one
  // convert again, which is what a collected base costs for real.
  const std::lock_guard lock(mutex_);
  const auto recent = std::chrono::steady_clock::now() - options_.image_grace;
  int removed = 0;
  for (auto it = digests_.begin(); it != digests_.end();) {
    if (in_use.count(it->first) == 0 && it->second <= recent) {
      it = digests_.erase(it);
      ++removed;
    } else {
      ++it;
    }
  }
  return removed;
}

std::vector<check_result> fake_driver::doctor() {
  // The same checks the libvirt driver runs, answered by the fake so /doctor keeps one shape.
  return {
      check_result{"hypervisor", true, "fake hypervisor: VMs are simulated in memory", "", 0.0},
      check_result{"image_store", true, "fake hypervisor: images are not pulled", "", 0.0},
      check_result{"guest_kernel", true, "fake hypervisor: no guest kernel is booted", "", 0.0},
  };
}

result<void> fake_driver::build_template(const template_spec& spec,
                                         steady_clock::time_point deadline) {
  if (auto e = injected(fake_phase::build_template)) {
    return *e;
  }
  if (auto e = port_taken(spec.guest.ssh_port)) {
    return *e;
  }
  const auto& guest = spec.guest;
  if (spec.template_id.empty() || !guest.authorized_keys.empty() || !guest.env.empty()) {
    return make_error(errc::vm_create_failed,
                      "a template needs an id and a guest without login keys or env");
  }
  {
    const std::lock_guard lock(mutex_);
    if (!building_.insert(spec.template_id).second) {
      return make_error(errc::vm_create_failed,
                        "template " + spec.template_id + " is being built already");
    }
    templates_.erase(spec.template_id);
    if (options_.state_dir) {
      std::error_code ec;
      fs::remove(*options_.state_dir / (spec.template_id + std::string(k_template_ext)), ec);
    }
  }
  auto finish = [&](result<void> r) {
    const std::lock_guard lock(mutex_);
    building_.erase(spec.template_id);
    if (r) {
      templates_[spec.template_id] = saved_template{key_of(guest), guest.ssh_username};
      if (options_.state_dir) {
        write_atomically(*options_.state_dir / (spec.template_id + std::string(k_template_ext)),
                         template_file(key_of(guest), guest.ssh_username));
      }
    }
    return r;
  };
  wait(options_.create_delay);
  if (guest.image.find("fail-create") != std::string::npos) {
    return finish(make_error(errc::vm_create_failed, "domain failed to start"));
  }
  const bool never = guest.image.find("fail-boot") != std::string::npos ||
                     guest.image.find("slow-boot") != std::string::npos;
  const auto ready_at = steady_clock::now() + options_.boot_delay;
  if (never || ready_at > deadline) {
    std::this_thread::sleep_until(deadline);
    return finish(make_error(errc::boot_timeout,
                             "guest did not report ready in time; console tail: [fake console]"));
  }
  std::this_thread::sleep_until(ready_at);
  if (guest.image.find("no-agent") != std::string::npos) {
    return finish(make_error(errc::clone_unsupported,
                             "the image has no qemu-guest-agent: its channel never connected"));
  }
  const auto saved_at = steady_clock::now() + options_.template_delay;
  if (saved_at > deadline) {
    std::this_thread::sleep_until(deadline);
    return finish(make_error(errc::boot_timeout, "the template was not saved in time"));
  }
  std::this_thread::sleep_until(saved_at);
  return finish({});
}

result<void> fake_driver::restore_clone(std::string_view template_id, const vm_spec& spec,
                                        steady_clock::time_point deadline) {
  if (auto e = injected(fake_phase::restore_clone)) {
    return *e;
  }
  if (auto e = port_taken(spec.ssh_port)) {
    return *e;
  }
  {
    const std::lock_guard lock(mutex_);
    sync_state_dir();
    const auto it = templates_.find(std::string(template_id));
    if (it == templates_.end()) {
      return make_error(errc::template_missing, "no saved template " + std::string(template_id));
    }
    if (it->second.key != key_of(spec) || it->second.ssh_username != spec.ssh_username) {
      return make_error(errc::vm_create_failed,
                        "the host's image, size or user differ from the template's");
    }
  }
  // Leftovers of an earlier attempt under this id are replaced, as by create_vm.
  (void)destroy(spec.host_id);
  const auto ready_at = steady_clock::now() + options_.restore_delay;
  if (ready_at > deadline) {
    std::this_thread::sleep_until(deadline);
    return make_error(errc::boot_timeout, "the clone did not become ready in time");
  }
  std::this_thread::sleep_until(ready_at);
  const std::lock_guard lock(mutex_);
  sync_state_dir();
  if (templates_.count(std::string(template_id)) == 0) {
    return make_error(errc::template_missing,
                      "template " + std::string(template_id) + " was removed during the restore");
  }
  if (auto opened = open_guest_endpoint(spec.host_id); !opened) {
    return opened.error();
  }
  vms_[spec.host_id] = spec;
  clone_of_[spec.host_id] = std::string(template_id);
  if (options_.state_dir) {
    write_atomically(*options_.state_dir / (spec.host_id + ".vm"), vm_file(spec));
  }
  return {};
}

result<void> fake_driver::apply_login(const vm_spec& spec, steady_clock::time_point deadline) {
  if (auto e = injected(fake_phase::apply_login)) {
    return *e;
  }
  if (options_.on_login) {
    options_.on_login(spec.host_id);
  }
  const auto done_at = steady_clock::now() + options_.login_delay;
  if (done_at > deadline) {
    std::this_thread::sleep_until(deadline);
    return make_error(errc::boot_failed, "the guest agent did not answer in time");
  }
  std::this_thread::sleep_until(done_at);
  const std::lock_guard lock(mutex_);
  sync_state_dir();
  const auto it = vms_.find(spec.host_id);
  if (it == vms_.end()) {
    return make_error(errc::not_found, "no running host " + spec.host_id);
  }
  it->second.authorized_keys = spec.authorized_keys;
  it->second.env = spec.env;
  // The readiness proof: the guest's SSH endpoint presents the key it was restored with. A
  // handshake shows the key, never the comment of its public line.
  if (key_material(it->second.host_key.public_line) != key_material(spec.host_key.public_line)) {
    return make_error(errc::host_key_mismatch, "the SSH endpoint " + spec.ssh_host + ":" +
                                                   std::to_string(spec.ssh_port) +
                                                   " did not present the pinned key");
  }
  return {};
}

result<void> fake_driver::destroy_template(std::string_view template_id) {
  if (auto e = injected(fake_phase::destroy_template)) {
    return *e;
  }
  const std::lock_guard lock(mutex_);
  templates_.erase(std::string(template_id));
  if (options_.state_dir) {
    std::error_code ec;
    fs::remove(*options_.state_dir / (std::string(template_id) + std::string(k_template_ext)), ec);
  }
  return {};
}

result<std::vector<std::string>> fake_driver::list_templates() {
  const std::lock_guard lock(mutex_);
  sync_state_dir();
  std::set<std::string> ids(building_.begin(), building_.end());
  for (const auto& [id, t] : templates_) {
    ids.insert(id);
  }
  return std::vector<std::string>(ids.begin(), ids.end());
}

void fake_driver::set_failure(fake_phase phase, std::optional<error> e) {
  const std::lock_guard lock(mutex_);
  if (e) {
    failures_[phase] = *e;
  } else {
    failures_.erase(phase);
  }
}

result<node_info> fake_driver::node() {
  if (auto e = injected(fake_phase::node)) {
    return *e;
  }
  return options_.node;
}

void fake_driver::set_busy_ports(std::set<int> ports) {
  const std::lock_guard lock(mutex_);
  busy_ports_ = std::move(ports);
}

std::optional<error> fake_driver::port_taken(int port) const {
  const std::lock_guard lock(mutex_);
  if (busy_ports_.count(port) == 0) {
    return std::nullopt;
  }
  return make_error(errc::port_busy,
                    "port " + std::to_string(port) + " is already bound by something else");
}

int fake_driver::calls(fake_phase phase) const {
  const std::lock_guard lock(mutex_);
  const auto it = calls_.find(phase);
  return it == calls_.end() ? 0 : it->second;
}

int fake_driver::conversions() const {
  const std::lock_guard lock(mutex_);
  return conversions_;
}

int fake_driver::vms_destroyed() const {
  const std::lock_guard lock(mutex_);
  return destroyed_;
}

std::set<std::string> fake_driver::live_vms() const {
  const std::lock_guard lock(mutex_);
  std::set<std::string> ids;
  for (const auto& [id, spec] : vms_) {
    ids.insert(id);
  }
  return ids;
}

std::optional<vm_spec> fake_driver::vm(std::string_view host_id) const {
  const std::lock_guard lock(mutex_);
  const auto it = vms_.find(std::string(host_id));
  return it == vms_.end() ? std::nullopt : std::optional<vm_spec>(it->second);
}

std::optional<std::string> fake_driver::cloned_from(std::string_view host_id) const {
  const std::lock_guard lock(mutex_);
  const auto it = clone_of_.find(std::string(host_id));
  return it == clone_of_.end() ? std::nullopt : std::optional<std::string>(it->second);
}

std::optional<template_key> fake_driver::template_of(std::string_view template_id) const {
  const std::lock_guard lock(mutex_);
  const auto it = templates_.find(std::string(template_id));
  return it == templates_.end() ? std::nullopt : std::optional<template_key>(it->second.key);
}

result<std::map<std::string, vm_status>> fake_driver::vm_states() {
  if (auto e = injected(fake_phase::vm_states)) {
    return *e;
  }
  const std::lock_guard lock(mutex_);
  sync_state_dir();
  std::map<std::string, vm_status> out;
  for (const auto& [id, spec] : vms_) {
    const auto s = stopped_.find(id);
    out[id] = s == stopped_.end() ? vm_status{} : s->second;
  }
  return out;
}

void fake_driver::watch_vms(std::function<void()> wake) {
  const std::lock_guard lock(mutex_);
  wake_ = std::move(wake);
}

bool fake_driver::kill_vm(std::string_view host_id, vm_fate fate) {
  std::function<void()> wake;
  {
    const std::lock_guard lock(mutex_);
    sync_state_dir();
    const std::string id(host_id);
    if (vms_.count(id) == 0) {
      return false;
    }
    switch (fate) {
      case vm_fate::powered_off:
        stopped_[id] = vm_status{vm_state::stopped, "guest powered off"};
        break;
      case vm_fate::crashed:
        stopped_[id] = vm_status{vm_state::crashed, "QEMU exited unexpectedly"};
        break;
      case vm_fate::vanished:
        // Its link went with its QEMU, as a tap does.
        close_guest_endpoint(id);
        vms_.erase(id);
        stopped_.erase(id);
        clone_of_.erase(id);
        if (options_.state_dir) {
          std::error_code ec;
          fs::remove(*options_.state_dir / (id + ".vm"), ec);
        }
        break;
    }
    wake = wake_;
  }
  if (wake) {
    wake();
  }
  return true;
}

void fake_driver::reconnected() {
  std::function<void()> wake;
  {
    const std::lock_guard lock(mutex_);
    wake = wake_;
  }
  if (wake) {
    wake();
  }
}

result<void> fake_driver::open_guest_endpoint(const std::string& host_id) {
  if (options_.guest_listeners == nullptr) {
    return {};
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return make_error(errc::vm_create_failed,
                      std::string("guest proxy endpoint: socket: ") + std::strerror(errno));
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 64) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int saved = errno;
    ::close(fd);
    return make_error(errc::vm_create_failed,
                      std::string("guest proxy endpoint: ") + std::strerror(saved));
  }
  const auto endpoint = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  options_.guest_listeners->add_listener(host_id, fd);
  endpoints_[host_id] = endpoint;
  if (options_.state_dir) {
    write_atomically(*options_.state_dir / (host_id + ".guest-endpoint"), endpoint + '\n');
  }
  return {};
}

void fake_driver::close_guest_endpoint(const std::string& host_id) {
  if (options_.guest_listeners == nullptr || endpoints_.erase(host_id) == 0) {
    return;
  }
  options_.guest_listeners->remove_listener(host_id);
  if (options_.state_dir) {
    std::error_code ec;
    fs::remove(*options_.state_dir / (host_id + ".guest-endpoint"), ec);
  }
}

std::optional<std::string> fake_driver::guest_endpoint(std::string_view host_id) const {
  const std::lock_guard lock(mutex_);
  const auto it = endpoints_.find(std::string(host_id));
  if (it == endpoints_.end()) {
    return std::nullopt;
  }
  return it->second;
}

}  // namespace litterbox::hypervisor
