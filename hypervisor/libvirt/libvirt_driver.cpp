#include "hypervisor/libvirt/libvirt_driver.hpp"

#include "base/log.hpp"
#include "base/process.hpp"
#include "base/secret.hpp"
#include "base/uuid.hpp"
#include "cloud-init/seed.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/libvirt/forward_port.hpp"
#include "hypervisor/libvirt/guest_agent.hpp"
#include "hypervisor/libvirt/save_image.hpp"
#include "hypervisor/libvirt/state_feed.hpp"
#include "hypervisor/libvirt/template_store.hpp"
#include "hypervisor/ssh/probe.hpp"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <fcntl.h>
#include <fstream>
#include <future>
#include <grp.h>
#include <iterator>
#include <pwd.h>
#include <stdexcept>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <thread>
#include <unistd.h>

namespace litterbox::hypervisor {
namespace fs = std::filesystem;
using std::chrono::steady_clock;

namespace {

constexpr std::size_t k_tail_bytes = 2048;
// How long the way a vanished domain ended is remembered (see vm_watch::stopped).
constexpr std::chrono::hours k_stop_memory{1};

std::string uuid_for(std::string_view host_id);

/// What a STOPPED lifecycle event's detail says about how the guest ended; the same words
/// vm_states() uses for a listed shut-off domain's reason.
vm_status stop_status(int detail) {
  switch (detail) {
    case VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN:
      return {vm_state::stopped, "guest powered off"};
    case VIR_DOMAIN_EVENT_STOPPED_DESTROYED:
      return {vm_state::stopped, "the VM was destroyed outside litterbox"};
    case VIR_DOMAIN_EVENT_STOPPED_CRASHED:
      return {vm_state::crashed, "QEMU exited unexpectedly"};
    case VIR_DOMAIN_EVENT_STOPPED_FAILED:
      return {vm_state::crashed, "the VM failed to start"};
    default:
      return {vm_state::stopped, "the VM is shut off"};
  }
}
// Deadlines of the tools create_vm runs (the egress firewall bounds its own iptables calls).
constexpr std::chrono::seconds k_qemu_img_timeout{60};
constexpr std::chrono::seconds k_seed_timeout{60};

void ignore_libvirt_error(void* /*user*/, virErrorPtr /*err*/) {}

void init_libvirt_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    virInitialize();
    virSetErrorFunc(nullptr, ignore_libvirt_error);
    // Keepalive needs an event loop; it must be registered before the first connection.
    virEventRegisterDefaultImpl();
  });
}

void wake_event_loop(int /*timer*/, void* /*opaque*/) {}

// libvirt keeps the last error per thread: this must run on the thread whose call failed.
std::string last_libvirt_error() {
  const virErrorPtr e = virGetLastError();
  if (e == nullptr || e->message == nullptr) {
    return "unknown libvirt error";
  }
  return e->message;
}

int last_libvirt_code() {
  const virErrorPtr e = virGetLastError();
  return e == nullptr ? 0 : e->code;
}

struct domain_deleter {
  void operator()(virDomainPtr d) const { virDomainFree(d); }
};
using domain_ptr = std::unique_ptr<virDomain, domain_deleter>;

// Adopts `id`'s proxy tap (with a listener unless `is_template`) and resumes `dom`, which was
// started or restored paused (`paused`): the guest runs only once its link is in place.
result<void> link_and_resume(proxy_links& links, virDomainPtr dom, const std::string& id,
                             bool is_template, bool paused) {
  if (auto linked = links.adopt(id, proxy_tap_name(id), !is_template); !linked) {
    return linked.error();
  }
  if (paused && virDomainResume(dom) != 0) {
    return make_error(errc::vm_create_failed, "cannot resume the guest: " + last_libvirt_error());
  }
  return {};
}

bool valid_host_id(std::string_view id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '-';
  });
}

std::string read_tail(const fs::path& path, std::size_t max_bytes, bool& found) {
  std::ifstream in(path, std::ios::binary);
  found = static_cast<bool>(in);
  if (!in) {
    return {};
  }
  in.seekg(0, std::ios::end);
  const auto size = static_cast<std::size_t>(std::max<std::streamoff>(0, in.tellg()));
  const std::size_t start = size > max_bytes ? size - max_bytes : 0;
  in.seekg(static_cast<std::streamoff>(start));
  std::string out(size - start, '\0');
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  out.resize(static_cast<std::size_t>(std::max<std::streamsize>(0, in.gcount())));
  return out;
}

// A console tail fit for an error message: printable text only, the ready token removed.
std::string clean_tail(std::string text, std::string_view token) {
  if (!token.empty()) {
    for (auto p = text.find(token); p != std::string::npos; p = text.find(token, p)) {
      text.replace(p, token.size(), "<token>");
    }
  }
  for (char& c : text) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\n' && c != '\t') || u == 0x7F) {
      c = ' ';
    }
  }
  return text;
}

error with_tail(errc code, std::string message, const fs::path& console_path,
                std::string_view token) {
  bool found = false;
  const std::string tail = read_tail(console_path, k_tail_bytes, found);
  message += "; console tail:\n";
  message += found ? clean_tail(tail, token) : std::string("(no console output)");
  return make_error(code, std::move(message));
}

bool chown_to(const fs::path& p, std::optional<unsigned int> uid, std::optional<unsigned int> gid) {
  if (!uid || !gid) {
    return true;
  }
  return ::chown(p.c_str(), *uid, *gid) == 0;
}

bool create_private_file(const fs::path& p) {
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return false;
  }
  return ::close(fd) == 0;
}

// Runs `fn` on its own thread and gives up after `timeout`; a hung libvirt or disk must not
// hang /doctor. The thread is left to finish on its own.
check_result boxed_check(std::string name, std::chrono::milliseconds timeout,
                         std::function<check_result()> fn) {
  const auto started = steady_clock::now();
  auto task = std::make_shared<std::packaged_task<check_result()>>(std::move(fn));
  auto fut = task->get_future();
  std::thread([task] { (*task)(); }).detach();
  check_result r;
  if (fut.wait_for(timeout) == std::future_status::ready) {
    r = fut.get();
  } else {
    r.ok = false;
    r.detail = "timed out";
  }
  r.name = std::move(name);
  r.latency_ms = std::chrono::duration<double, std::milli>(steady_clock::now() - started).count();
  return r;
}

}  // namespace

struct libvirt_driver::connection {
  explicit connection(virConnectPtr p) : ptr(p) {}
  ~connection() {
    if (lifecycle_callback >= 0) {
      (void)virConnectDomainEventDeregisterAny(ptr, lifecycle_callback);
    }
    virConnectClose(ptr);
  }
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  virConnectPtr ptr;
  int lifecycle_callback = -1;  ///< virConnectDomainEventRegisterAny's id; -1: none
};

struct libvirt_driver::vm_watch {
  std::mutex mutex;
  std::function<void()> wake;
  /// How domains ended, by domain UUID (a host's id), from their STOPPED events: a transient
  /// domain (a clone) is gone from every listing once it stopped, so the event is the only
  /// place that says whether it powered off or was killed. Dropped by destroy(), and after
  /// k_stop_memory (a domain of another owner tag is never destroyed by us).
  std::map<std::string, std::pair<vm_status, steady_clock::time_point>> stopped;

  void record_stop(std::string uuid, vm_status status) {
    const auto now = steady_clock::now();
    const std::lock_guard lock(mutex);
    std::erase_if(stopped, [&](const auto& e) { return now - e.second.second > k_stop_memory; });
    stopped.insert_or_assign(std::move(uuid), std::pair{std::move(status), now});
  }

  void notify() {
    std::function<void()> w;
    {
      const std::lock_guard lock(mutex);
      w = wake;
    }
    if (w) {
      w();
    }
  }
};

/// One virConnectOpen in flight. Shared by the thread running it and the callers waiting for
/// it, so that a thread abandoned on a libvirtd that never answers touches nothing else (the
/// driver may be gone by the time it returns).
struct libvirt_driver::open_attempt {
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;
  std::shared_ptr<connection> conn;
  std::string error;
};

/// libvirt's default event loop (process-wide by libvirt's design), run on one thread while
/// at least one driver lives: it drives keepalive, which notices a libvirtd that stopped
/// answering and fails the calls waiting on it.
class libvirt_driver::event_loop {
 public:
  static std::shared_ptr<event_loop> acquire() {
    static std::mutex mutex;
    static std::weak_ptr<event_loop> current;
    const std::lock_guard lock(mutex);
    auto loop = current.lock();
    if (!loop) {
      loop = std::shared_ptr<event_loop>(new event_loop());
      current = loop;
    }
    return loop;
  }
  event_loop(const event_loop&) = delete;
  event_loop& operator=(const event_loop&) = delete;
  ~event_loop() {
    stop_ = true;
    // A timer due at once makes the loop return from its wait and see stop_.
    const int timer = virEventAddTimeout(0, wake_event_loop, nullptr, nullptr);
    thread_.join();
    if (timer >= 0) {
      virEventRemoveTimeout(timer);
    }
  }

 private:
  event_loop()
      : thread_([this] {
          while (!stop_) {
            if (virEventRunDefaultImpl() < 0) {
              break;
            }
          }
        }) {}
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

namespace {

// A guest whose forward cannot be bound would fail to start (QEMU exits): this says so
// before anything is made, and the caller can lease another port.
result<void> forward_free(const vm_spec& spec) {
  if (forward_port_bindable(spec.ssh_host, spec.ssh_port)) {
    return {};
  }
  return make_error(errc::port_busy, "port " + std::to_string(spec.ssh_port) + " on " +
                                         spec.ssh_host + " is already bound by something else");
}

check_result ssh_ports_check(int lo, int hi) {
  check_result r;
  const std::string range = std::to_string(lo) + "-" + std::to_string(hi);
  const auto ephemeral = ephemeral_ports_within(lo, hi);
  if (!ephemeral) {
    r.ok = true;  // not Linux's /proc: nothing known either way
    r.detail = range + "; the kernel's ephemeral port range cannot be read";
    return r;
  }
  r.ok = *ephemeral == 0;
  if (r.ok) {
    r.detail = range + ", outside the kernel's ephemeral ports";
    return r;
  }
  r.detail = std::to_string(*ephemeral) + " of the SSH ports " + range +
             " are ephemeral ports the kernel may give outgoing connections; a create whose "
             "port is taken that way moves to another port, a few times before it fails";
  r.hint =
      "choose LITTERBOX_SSH_PORTS outside net.ipv4.ip_local_port_range, or add the range to "
      "net.ipv4.ip_local_reserved_ports";
  return r;
}

}  // namespace

libvirt_driver::libvirt_driver(libvirt_config config, base_images& images)
    : config_(std::move(config)), images_(images), accel_(accel::tcg) {
  init_libvirt_once();
  events_ = event_loop::acquire();
  watch_ = std::make_shared<vm_watch>();
  auto chosen = choose_accel(config_.accel, host_has_hardware_kvm());
  if (!chosen) {
    throw std::runtime_error(chosen.error().message);
  }
  accel_ = *chosen;
  if (config_.state_dir.empty()) {
    throw std::runtime_error("the libvirt driver needs a state directory");
  }
  fs::create_directories(config_.state_dir / "vms");
  fs::create_directories(config_.state_dir / "templates");
  // QEMU runs as another user: it must be able to traverse down to its files.
  fs::permissions(config_.state_dir / "vms",
                  fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
  fs::permissions(config_.state_dir / "templates",
                  fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
  if (config_.ssh_port_min <= config_.ssh_port_max) {
    if (const auto ports = ssh_ports_check(config_.ssh_port_min, config_.ssh_port_max); !ports.ok) {
      spdlog::warn("{}: {}", ports.detail, ports.hint);
    }
  }
  qemu_user_ = config_.qemu_user;
  {
    std::ifstream in(config_.qemu_conf);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (auto user = qemu_conf_user(text)) {
      qemu_user_ = *user;
    }
  }
  // qemu.conf also takes "+<uid>", a uid with or without a passwd entry.
  if (!qemu_user_.empty() && qemu_user_.front() == '+') {
    unsigned uid = 0;
    const char* first = qemu_user_.data() + 1;
    const char* last = qemu_user_.data() + qemu_user_.size();
    const auto [end, ec] = std::from_chars(first, last, uid);
    if (ec != std::errc{} || end != last || first == last) {
      throw std::runtime_error("cannot read user = \"" + qemu_user_ + "\" in " +
                               config_.qemu_conf.string());
    }
    const passwd* pw = ::getpwuid(uid);
    qemu_uid_ = uid;
    qemu_gid_ = pw != nullptr ? pw->pw_gid : uid;
  } else if (const passwd* pw = ::getpwnam(qemu_user_.c_str()); pw != nullptr) {
    qemu_uid_ = pw->pw_uid;
    qemu_gid_ = pw->pw_gid;
  }
  if (config_.isolate_host) {
    egress_policy policy;
    policy.internet = config_.guest_internet;
    policy.entries = config_.guest_egress;
    firewall_ = std::make_unique<iptables_egress_firewall>(std::move(policy));
    if (auto ok = assert_firewall(std::nullopt); !ok) {
      throw std::runtime_error(ok.error().message);
    }
  }
  links_ = config_.links
               ? config_.links
               : std::make_shared<netns_proxy_links>(config_.proxy_netns, config_.guest_listeners);
  if (auto ok = links_->prepare(); !ok) {
    throw std::runtime_error(ok.error().message);
  }
  firewall_thread_ = std::thread([this] { firewall_loop(); });
  if (connect()) {
    restore_links();
  }
}

void libvirt_driver::restore_links() {
  const auto conn = connect();
  if (!conn) {
    return;
  }
  virDomainPtr* doms = nullptr;
  const int n = virConnectListAllDomains(conn->ptr, &doms, VIR_CONNECT_LIST_DOMAINS_ACTIVE);
  if (n < 0) {
    spdlog::warn("cannot list domains to restore the guest proxy links: {}", last_libvirt_error());
    return;
  }
  std::vector<std::string> xmls;
  for (int i = 0; i < n; ++i) {
    const domain_ptr dom(doms[i]);
    char* desc = virDomainGetXMLDesc(dom.get(), 0);
    if (desc != nullptr) {
      xmls.emplace_back(desc);
      std::free(desc);
    }
    char* meta = virDomainGetMetadata(dom.get(), VIR_DOMAIN_METADATA_ELEMENT,
                                      std::string(k_metadata_ns).c_str(), 0);
    if (meta == nullptr) {
      continue;
    }
    const std::string host = metadata_host_id(meta, config_.owner);
    const std::string tmpl = metadata_template_id(meta, config_.owner);
    std::free(meta);
    const std::string& id = host.empty() ? tmpl : host;
    if (id.empty() || proxy_tap_name(id).empty() ||
        xmls.back().find("dev='" + proxy_tap_name(id) + "'") == std::string::npos) {
      continue;  // not ours, or a guest of a layout without the proxy NIC
    }
    if (auto ok = links_->adopt(id, proxy_tap_name(id), !host.empty()); !ok) {
      spdlog::error("host {}: cannot restore its guest proxy link: {}", id, ok.error().message);
    }
  }
  std::free(doms);
  // A tap that no running domain (of any owner) names is left over: delete it.
  const auto taps = links_->taps();
  if (!taps) {
    spdlog::warn("{}", taps.error().message);
    return;
  }
  for (const auto& tap : *taps) {
    const bool used = std::any_of(xmls.begin(), xmls.end(), [&](const std::string& x) {
      return x.find("dev='" + tap + "'") != std::string::npos;
    });
    if (!used) {
      spdlog::info("deleting the stray guest proxy link {}", tap);
      (void)links_->remove(std::string(), tap);
    }
  }
}

libvirt_driver::~libvirt_driver() {
  {
    // A /doctor check that timed out may still run on its own thread and use this driver;
    // everything it calls has a deadline of its own, so this wait ends.
    std::unique_lock lock(checks_mutex_);
    checks_cv_.wait(lock, [this] { return checks_running_ == 0; });
  }
  {
    const std::lock_guard lock(stop_mutex_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (firewall_thread_.joinable()) {
    firewall_thread_.join();
  }
}

std::shared_ptr<void> libvirt_driver::hold_for_check() {
  {
    const std::lock_guard lock(checks_mutex_);
    ++checks_running_;
  }
  return {nullptr, [this](void*) {
            {
              const std::lock_guard lock(checks_mutex_);
              --checks_running_;
            }
            checks_cv_.notify_all();
          }};
}

fs::path libvirt_driver::host_dir(std::string_view host_id) const {
  return config_.state_dir / "vms" / std::string(host_id);
}

std::shared_ptr<libvirt_driver::connection> libvirt_driver::connect(std::string* why) {
  std::shared_ptr<open_attempt> attempt;
  {
    const std::lock_guard lock(mutex_);
    // A restarted libvirtd (or one keepalive gave up on) leaves the old connection dead:
    // detect that and reconnect.
    if (conn_ && virConnectIsAlive(conn_->ptr) == 1) {
      return conn_;
    }
    conn_.reset();
    if (!opening_) {
      // Single flight: every caller waits for this one open, none holds mutex_ meanwhile.
      opening_ = std::make_shared<open_attempt>();
      std::thread([a = opening_, uri = config_.uri,
                   interval = static_cast<int>(config_.keepalive_interval.count()),
                   count = config_.keepalive_count] {
        std::shared_ptr<connection> conn;
        std::string error;
        if (const virConnectPtr raw = virConnectOpen(uri.c_str()); raw != nullptr) {
          conn = std::make_shared<connection>(raw);
          if (interval > 0) {
            virConnectSetKeepAlive(raw, interval, count);
          }
        } else {
          error = last_libvirt_error();  // thread-local: read here, on the failing thread
        }
        {
          const std::lock_guard done_lock(a->mutex);
          a->done = true;
          a->conn = std::move(conn);
          a->error = std::move(error);
        }
        a->done_cv.notify_all();
      }).detach();
    }
    attempt = opening_;
  }
  std::shared_ptr<connection> conn;
  {
    std::unique_lock lock(attempt->mutex);
    if (!attempt->done_cv.wait_for(lock, config_.connect_timeout, [&] { return attempt->done; })) {
      if (why != nullptr) {
        *why = "libvirtd did not answer within " + std::to_string(config_.connect_timeout.count()) +
               " ms";
      }
      return nullptr;
    }
    conn = attempt->conn;
    if (!conn && why != nullptr) {
      *why = attempt->error;
    }
  }
  bool adopted = false;
  {
    const std::lock_guard lock(mutex_);
    if (opening_ == attempt) {
      opening_.reset();
      if (conn && !conn_) {
        conn_ = conn;
        adopted = true;
      }
    }
  }
  if (adopted) {
    // A new connection: follow its lifecycle events, and let the watcher look at every VM,
    // since whatever happened while there was no connection was never reported.
    subscribe(*conn);
    watch_->notify();
  }
  return conn;
}

void libvirt_driver::subscribe(connection& c) {
  if (c.lifecycle_callback >= 0) {
    return;
  }
  // Runs on the event loop thread. Only the changes that can end a guest wake the watcher;
  // what happened is read back by vm_states().
  virConnectDomainEventCallback on_lifecycle = [](virConnectPtr /*conn*/, virDomainPtr dom,
                                                  int event, int detail, void* opaque) {
    auto& watch = *static_cast<std::shared_ptr<vm_watch>*>(opaque);
    std::array<char, VIR_UUID_STRING_BUFLEN> uuid{};
    // The UUID is the handle's own copy: no call to libvirtd, so it works for a domain that
    // no longer exists.
    if (event == VIR_DOMAIN_EVENT_STOPPED && virDomainGetUUIDString(dom, uuid.data()) == 0) {
      watch->record_stop(uuid.data(), stop_status(detail));
    }
    if (event == VIR_DOMAIN_EVENT_STOPPED || event == VIR_DOMAIN_EVENT_CRASHED ||
        event == VIR_DOMAIN_EVENT_UNDEFINED) {
      watch->notify();
    }
    return 0;
  };
  auto* opaque = new std::shared_ptr<vm_watch>(watch_);
  c.lifecycle_callback = virConnectDomainEventRegisterAny(
      c.ptr, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle),
      opaque, [](void* p) { delete static_cast<std::shared_ptr<vm_watch>*>(p); });
  if (c.lifecycle_callback < 0) {
    delete opaque;  // not registered: libvirt does not call the free function
    // Reconciliation still runs periodically; only the prompt wake-up is lost.
    spdlog::warn("libvirt: cannot subscribe to domain lifecycle events: {}",
                 log_escape(last_libvirt_error()));
  }
}

void libvirt_driver::watch_vms(std::function<void()> wake) {
  const std::lock_guard lock(watch_->mutex);
  watch_->wake = std::move(wake);
}

result<std::map<std::string, vm_status>> libvirt_driver::vm_states() {
  std::string why;
  const auto conn = connect(&why);
  if (!conn) {
    return make_error(errc::unavailable, "libvirt is unreachable: " + why);
  }
  // Taken before the listing: a listener adopted after it belongs to a domain the listing may
  // not show yet, and must not be taken for a gone guest's.
  const auto listening = links_->listening();
  virDomainPtr* doms = nullptr;
  const int n = virConnectListAllDomains(conn->ptr, &doms, 0);
  if (n < 0) {
    return make_error(errc::unavailable, "cannot list domains: " + last_libvirt_error());
  }
  std::map<std::string, vm_status> out;
  for (int i = 0; i < n; ++i) {
    const domain_ptr dom(doms[i]);
    char* meta = virDomainGetMetadata(dom.get(), VIR_DOMAIN_METADATA_ELEMENT,
                                      std::string(k_metadata_ns).c_str(), 0);
    if (meta == nullptr) {
      continue;
    }
    std::string id = metadata_host_id(meta, config_.owner);
    std::free(meta);
    if (id.empty()) {
      continue;
    }
    int state = 0;
    int reason = 0;
    if (virDomainGetState(dom.get(), &state, &reason, 0) != 0) {
      continue;  // gone between the listing and now: as good as missing
    }
    vm_status st;
    if (state == VIR_DOMAIN_CRASHED) {
      st = {vm_state::crashed, "the guest crashed"};
    } else if (state == VIR_DOMAIN_SHUTOFF) {
      switch (reason) {
        case VIR_DOMAIN_SHUTOFF_SHUTDOWN:
          st = {vm_state::stopped, "guest powered off"};
          break;
        case VIR_DOMAIN_SHUTOFF_DESTROYED:
          st = {vm_state::stopped, "the VM was destroyed outside litterbox"};
          break;
        case VIR_DOMAIN_SHUTOFF_CRASHED:
          st = {vm_state::crashed, "QEMU exited unexpectedly"};
          break;
        case VIR_DOMAIN_SHUTOFF_FAILED:
          st = {vm_state::crashed, "the VM failed to start"};
          break;
        default:
          st = {vm_state::stopped, "the VM is shut off"};
          break;
      }
    }
    out[std::move(id)] = std::move(st);
  }
  std::free(doms);
  // A domain that stopped and is no longer listed (transient: a clone) ended the way its
  // STOPPED event said.
  {
    const std::lock_guard lock(watch_->mutex);
    for (const auto& [uuid, entry] : watch_->stopped) {
      out.try_emplace(uuid, entry.first);
    }
  }
  // A guest destroyed by another process (`litterboxd reap`, a peer) or dead on its own took
  // its tap along, but its listener would stay open here until a restart.
  for (const auto& [id, generation] : listening) {
    const auto it = out.find(id);
    if (it == out.end() || it->second.state != vm_state::running) {
      links_->drop_listener(id, generation);
    }
  }
  return out;
}

result<void> libvirt_driver::assert_firewall(std::optional<unsigned> observed_uid) {
  const std::lock_guard lock(firewall_mutex_);
  std::vector<unsigned> uids = firewall_uids_;
  if (uids.empty()) {
    if (!qemu_uid_) {
      return make_error(errc::unavailable, "QEMU's user " + qemu_user_ +
                                               " does not exist: guests cannot be firewalled");
    }
    uids.push_back(*qemu_uid_);
  }
  if (observed_uid) {
    if (std::find(uids.begin(), uids.end(), *observed_uid) != uids.end()) {
      return {};
    }
    // qemu.conf changed under a running libvirtd, or was never what it said: cover the new
    // uid too, and keep covering the old one for the guests still running under it.
    spdlog::warn("QEMU runs as uid {}, not as {} ({}): the guest firewall covers it too",
                 *observed_uid, qemu_user_, uids.front());
    uids.push_back(*observed_uid);
  }
  // Root's packets are this host's own: a rule matching them would cut litterboxd off
  // while guests still could not be told apart.
  if (std::find(uids.begin(), uids.end(), 0U) != uids.end()) {
    return make_error(errc::unavailable,
                      "QEMU runs as root, so guests cannot be kept off this host's services "
                      "and private networks; set user = \"libvirt-qemu\" and group = "
                      "\"kvm\" in " +
                          config_.qemu_conf.string() + " and restart libvirtd");
  }
  if (auto ok = firewall_->apply(uids); !ok) {
    return ok.error();
  }
  firewall_uids_ = std::move(uids);
  return {};
}

void libvirt_driver::firewall_loop() {
  std::unique_lock lock(stop_mutex_);
  while (!stop_cv_.wait_for(lock, config_.firewall_interval, [this] { return stopping_; })) {
    lock.unlock();
    if (firewall_) {
      std::vector<unsigned> uids;
      {
        const std::lock_guard fw(firewall_mutex_);
        uids = firewall_uids_;
      }
      // Someone else's iptables-restore, a flush or a rule inserted above ours: log what was
      // found, then rebuild either way (content can drift without the count changing).
      if (const auto state = firewall_->inspect(uids); !state.ok) {
        spdlog::warn("guest egress firewall was not in force ({}); re-asserting it", state.detail);
      }
      if (auto ok = assert_firewall(std::nullopt); !ok) {
        spdlog::error("cannot re-assert the guest egress firewall: {}", ok.error().message);
      }
    }
    // The proxy namespace is compared whole, so it is rebuilt only when it changed.
    if (const auto state = links_->inspect(); !state.ok) {
      spdlog::warn("guest proxy namespace was not as prepared ({}); re-asserting it", state.detail);
      if (auto ok = links_->prepare(); !ok) {
        spdlog::error("cannot re-assert the guest proxy namespace: {}", ok.error().message);
      }
    }
    lock.lock();
  }
}

result<std::string> libvirt_driver::prepare_image(
    std::string_view image, std::optional<std::chrono::steady_clock::time_point> deadline) {
  return images_.prepare(image, deadline);
}

result<std::string> libvirt_driver::resolve_image(std::string_view image) {
  return images_.resolve(image);
}

result<void> libvirt_driver::create_vm(const vm_spec& spec) {
  if (!valid_host_id(spec.host_id)) {
    return make_error(errc::vm_create_failed, "malformed host id");
  }
  // No guest starts unless its firewall is in force right now.
  if (firewall_) {
    if (auto ok = assert_firewall(std::nullopt); !ok) {
      return ok.error();
    }
  }
  std::string why;
  const auto conn = connect(&why);
  if (!conn) {
    return make_error(errc::unavailable, "libvirt is unreachable: " + why);
  }
  // Leftovers of an earlier attempt under this id would clash with the names below.
  if (auto gone = destroy(spec.host_id); !gone) {
    return gone.error();
  }
  if (auto free = forward_free(spec); !free) {
    return free.error();
  }
  auto fail = [&](errc code, std::string message) -> result<void> {
    (void)destroy(spec.host_id);
    return make_error(code, std::move(message));
  };
  auto xml = make_guest(spec, host_dir(spec.host_id), false);
  if (!xml) {
    (void)destroy(spec.host_id);
    return xml.error();
  }
  const domain_ptr dom(virDomainDefineXML(conn->ptr, xml->c_str()));
  if (!dom) {
    return fail(errc::vm_create_failed, "cannot define the domain: " + last_libvirt_error());
  }
  if (virDomainCreateWithFlags(dom.get(), config_.start_paused ? VIR_DOMAIN_START_PAUSED : 0) !=
      0) {
    const auto start_error = last_libvirt_error();
    return fail(is_forward_bind_failure(start_error) ? errc::port_busy : errc::vm_create_failed,
                "cannot start the domain: " + start_error);
  }
  // The firewall matches uids: make sure the one this QEMU really runs as is among them
  // (qemu.conf may have changed under a running libvirtd). The guest is still in its
  // kernel here, well before its network is up.
  if (firewall_) {
    for (const auto& q : running_qemu_processes()) {
      if (q.domain != spec.name) {
        continue;
      }
      if (auto ok = assert_firewall(q.uid); !ok) {
        return fail(errc::vm_create_failed, ok.error().message);
      }
    }
  }
  if (auto run = link_and_resume(*links_, dom.get(), spec.host_id, false, config_.start_paused);
      !run) {
    return fail(errc::vm_create_failed, run.error().message);
  }
  return {};
}

result<std::string> libvirt_driver::make_guest(const vm_spec& spec, const fs::path& dir,
                                               bool is_template) {
  std::error_code ec;
  fs::create_directory(dir, ec);
  if (ec) {
    return make_error(errc::vm_create_failed, "cannot create the host directory: " + ec.message());
  }
  fs::permissions(dir, fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec, ec);

  const fs::path disk = dir / "disk.qcow2";
  if (auto made = images_.create_overlay(spec.image_digest, disk, spec.disk_gb); !made) {
    return made.error();
  }
  ::chmod(disk.c_str(), 0600);

  cloudinit::seed_spec seed;
  seed.instance_id = spec.host_id;
  seed.hostname = spec.name;
  seed.username = spec.ssh_username;
  seed.authorized_keys = spec.authorized_keys;
  seed.env = spec.env;
  seed.host_private_key = spec.host_key.private_openssh;
  seed.host_public_key = spec.host_key.public_line;
  seed.ready_token = spec.ready_token;
  auto files = cloudinit::render_seed(seed);
  if (!files) {
    return make_error(errc::vm_create_failed, "cannot render the seed: " + files.error().message);
  }
  const fs::path seed_path = dir / "seed.iso";
  if (auto ok = cloudinit::write_seed_image(*files, seed_path, k_seed_timeout); !ok) {
    return make_error(errc::vm_create_failed, ok.error().message);
  }
  const fs::path console_path = dir / "console.log";
  if (!create_private_file(console_path)) {
    return make_error(errc::vm_create_failed, "cannot create the console file");
  }
  if (!chown_to(disk, qemu_uid_, qemu_gid_) || !chown_to(seed_path, qemu_uid_, qemu_gid_) ||
      !chown_to(console_path, qemu_uid_, qemu_gid_)) {
    return make_error(errc::vm_create_failed,
                      "cannot hand the guest files to " + config_.qemu_user);
  }

  domain_spec d;
  d.name = spec.name;
  d.host_id = spec.host_id;
  d.is_template = is_template;
  d.owner = config_.owner;
  d.acceleration = accel_;
  d.vcpus = spec.cpus;
  d.memory_mib = spec.memory_mib;
  d.kernel = config_.kernel;
  d.initrd = config_.initrd;
  d.cmdline = config_.cmdline;
  d.disk = disk;
  d.seed = seed_path;
  d.console = console_path;
  d.ssh_host = spec.ssh_host;
  d.ssh_port = spec.ssh_port;
  d.restrict_network = !config_.guest_internet;
  d.proxy_tap = proxy_tap_name(spec.host_id);
  if (d.proxy_tap.empty()) {
    return make_error(errc::vm_create_failed, "the host id has too few hex digits for a tap name");
  }
  auto xml = render_domain_xml(d);
  if (!xml) {
    return make_error(errc::vm_create_failed, xml.error().message);
  }
  return std::move(*xml);
}

result<void> libvirt_driver::wait_ready(const vm_spec& spec, steady_clock::time_point deadline) {
  return await_ready(spec, host_dir(spec.host_id) / "console.log", deadline);
}

result<void> libvirt_driver::await_ready(const vm_spec& spec, const fs::path& console_path,
                                         steady_clock::time_point deadline) {
  const std::string ready_line = std::string(cloudinit::k_ready_word) + " " + spec.ready_token;
  const std::string failed_line = std::string(cloudinit::k_failed_word) + " " + spec.ready_token;
  bool signalled = false;
  std::string last_probe = "no ready signal from the guest";
  while (steady_clock::now() < deadline) {
    if (!signalled) {
      bool found = false;
      const std::string text = read_tail(console_path, std::size_t{1} << 22U, found);
      if (text.find(failed_line) != std::string::npos) {
        return with_tail(errc::boot_failed, "cloud-init reported errors", console_path,
                         spec.ready_token);
      }
      signalled = text.find(ready_line) != std::string::npos;
    }
    // Fail fast when the guest is gone (panic, poweroff, QEMU crash) instead of timing out.
    if (const auto conn = connect()) {
      const domain_ptr dom(virDomainLookupByName(conn->ptr, spec.name.c_str()));
      if (!dom && last_libvirt_code() == VIR_ERR_NO_DOMAIN) {
        return with_tail(errc::boot_failed, "the domain disappeared while booting", console_path,
                         spec.ready_token);
      }
      int state = 0;
      int reason = 0;
      if (dom && virDomainGetState(dom.get(), &state, &reason, 0) == 0 &&
          (state == VIR_DOMAIN_SHUTOFF || state == VIR_DOMAIN_CRASHED)) {
        return with_tail(errc::boot_failed, "the guest stopped while booting", console_path,
                         spec.ready_token);
      }
    }
    if (signalled) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady_clock::now());
      const auto budget =
          std::clamp(left, std::chrono::milliseconds(1000), std::chrono::milliseconds(10000));
      const auto probe =
          probe_host_key(spec.ssh_host, spec.ssh_port, spec.host_key.public_line, budget);
      if (probe.status == probe_status::matched) {
        return {};
      }
      if (probe.status == probe_status::mismatch) {
        return make_error(errc::host_key_mismatch, "the SSH endpoint " + spec.ssh_host + ":" +
                                                       std::to_string(spec.ssh_port) +
                                                       " did not present the pinned key");
      }
      last_probe = probe.detail;
    }
    std::this_thread::sleep_for(config_.poll_interval);
  }
  return with_tail(errc::boot_timeout,
                   signalled ? "the guest signalled ready but SSH did not answer: " + last_probe
                             : std::string("the guest did not signal ready in time"),
                   console_path, spec.ready_token);
}

result<void> libvirt_driver::destroy(std::string_view host_id) {
  if (!valid_host_id(host_id)) {
    return make_error(errc::teardown_failed, "malformed host id");
  }
  // The listener first: no connection from the guest outlives its teardown.
  if (const auto tap = proxy_tap_name(host_id); !tap.empty()) {
    if (auto gone = links_->remove(std::string(host_id), tap); !gone) {
      return gone.error();
    }
  }
  auto removed = remove_tagged(metadata_host_id, host_id, "domain", host_dir(host_id));
  if (removed) {
    const std::lock_guard lock(watch_->mutex);
    watch_->stopped.erase(uuid_for(host_id));
  }
  return removed;
}

result<void> libvirt_driver::remove_tagged(std::string (*id_of)(std::string_view metadata_xml,
                                                                std::string_view owner),
                                           std::string_view id, std::string_view what,
                                           const fs::path& dir) {
  std::string why;
  const auto conn = connect(&why);
  if (!conn) {
    return make_error(errc::unavailable, "libvirt is unreachable: " + why);
  }
  virDomainPtr* doms = nullptr;
  const int n = virConnectListAllDomains(conn->ptr, &doms, 0);
  if (n < 0) {
    return make_error(errc::unavailable, "cannot list domains: " + last_libvirt_error());
  }
  std::vector<domain_ptr> all;
  for (int i = 0; i < n; ++i) {
    all.emplace_back(doms[i]);
  }
  std::free(doms);
  for (const auto& dom : all) {
    char* meta = virDomainGetMetadata(dom.get(), VIR_DOMAIN_METADATA_ELEMENT,
                                      std::string(k_metadata_ns).c_str(), 0);
    if (meta == nullptr) {
      continue;
    }
    const std::string owned = id_of(meta, config_.owner);
    std::free(meta);
    if (owned != id) {
      continue;
    }
    // A transient domain (a clone) is gone once stopped; one that went away meanwhile is
    // gone too: both are what teardown wants.
    if (virDomainIsActive(dom.get()) == 1 && virDomainDestroy(dom.get()) != 0 &&
        last_libvirt_code() != VIR_ERR_OPERATION_INVALID &&
        last_libvirt_code() != VIR_ERR_NO_DOMAIN) {
      return make_error(errc::teardown_failed,
                        "cannot stop the " + std::string(what) + ": " + last_libvirt_error());
    }
    if (virDomainIsPersistent(dom.get()) == 1 && virDomainUndefine(dom.get()) != 0 &&
        last_libvirt_code() != VIR_ERR_NO_DOMAIN) {
      return make_error(errc::teardown_failed,
                        "cannot undefine the " + std::string(what) + ": " + last_libvirt_error());
    }
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (ec) {
    return make_error(errc::teardown_failed,
                      "cannot remove the " + std::string(what) + "'s files: " + ec.message());
  }
  return {};
}

result<std::string> libvirt_driver::console(std::string_view host_id, std::size_t max_bytes) {
  if (!valid_host_id(host_id)) {
    return make_error(errc::not_found, "no console for this host");
  }
  // Read a little more than asked so that a ready line cut at the window's edge is still
  // recognised and redacted whole before the window is trimmed.
  constexpr std::size_t k_margin = 256;
  bool found = false;
  std::string text = read_tail(host_dir(host_id) / "console.log", max_bytes + k_margin, found);
  if (!found) {
    return make_error(errc::not_found, "no console for this host");
  }
  text = cloudinit::redact_ready_tokens(std::move(text));
  if (text.size() > max_bytes) {
    text.erase(0, text.size() - max_bytes);
  }
  return text;
}

result<std::vector<std::string>> libvirt_driver::owned_ids(
    std::string (*id_of)(std::string_view metadata_xml, std::string_view owner),
    const fs::path& dir) {
  std::vector<std::string> ids;
  std::string why;
  const auto conn = connect(&why);
  if (!conn) {
    return make_error(errc::unavailable, "libvirt is unreachable: " + why);
  }
  virDomainPtr* doms = nullptr;
  const int n = virConnectListAllDomains(conn->ptr, &doms, 0);
  if (n < 0) {
    return make_error(errc::unavailable, "cannot list domains: " + last_libvirt_error());
  }
  for (int i = 0; i < n; ++i) {
    const domain_ptr dom(doms[i]);
    char* meta = virDomainGetMetadata(dom.get(), VIR_DOMAIN_METADATA_ELEMENT,
                                      std::string(k_metadata_ns).c_str(), 0);
    if (meta != nullptr) {
      std::string id = id_of(meta, config_.owner);
      std::free(meta);
      if (!id.empty()) {
        ids.push_back(std::move(id));
      }
    }
  }
  std::free(doms);
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string id = it->path().filename().string();
    if (valid_host_id(id)) {
      ids.push_back(id);
    }
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

result<std::vector<std::string>> libvirt_driver::list_owned() {
  return owned_ids(metadata_host_id, config_.state_dir / "vms");
}

result<int> libvirt_driver::collect_images(const std::set<std::string>& in_use) {
  return images_.collect(in_use);
}

std::vector<std::string> libvirt_driver::owned_domain_names() {
  std::vector<std::string> names;
  const auto conn = connect();
  if (!conn) {
    return names;
  }
  virDomainPtr* doms = nullptr;
  const int n = virConnectListAllDomains(conn->ptr, &doms, VIR_CONNECT_LIST_DOMAINS_ACTIVE);
  for (int i = 0; i < n; ++i) {
    const domain_ptr dom(doms[i]);
    char* meta = virDomainGetMetadata(dom.get(), VIR_DOMAIN_METADATA_ELEMENT,
                                      std::string(k_metadata_ns).c_str(), 0);
    if (meta == nullptr) {
      continue;
    }
    const bool ours = !metadata_host_id(meta, config_.owner).empty();
    std::free(meta);
    if (const char* name = virDomainGetName(dom.get()); ours && name != nullptr) {
      names.emplace_back(name);
    }
  }
  std::free(doms);
  return names;
}

result<node_info> libvirt_driver::node() {
  std::string why;
  const auto conn = connect(&why);
  if (!conn) {
    return make_error(errc::unavailable, "libvirt is unreachable: " + why);
  }
  virNodeInfo info{};
  if (virNodeGetInfo(conn->ptr, &info) != 0) {
    return make_error(errc::unavailable, "cannot read the node's info: " + last_libvirt_error());
  }
  // The URI as configured names the node: it is what litterboxd connects with.
  return node_info{config_.uri, static_cast<int>(info.cpus),
                   static_cast<std::int64_t>(info.memory / 1024)};
}

check_result libvirt_driver::isolation_check() {
  check_result r;
  r.hint =
      "litterboxd re-asserts the firewall every " +
      std::to_string(
          std::chrono::duration_cast<std::chrono::seconds>(config_.firewall_interval).count()) +
      " s and before each create; if this persists, look for rules above the jump in "
      "`iptables -S OUTPUT` / `ip6tables -S OUTPUT` and check user in " +
      config_.qemu_conf.string();
  std::vector<unsigned> uids;
  {
    const std::lock_guard lock(firewall_mutex_);
    uids = firewall_uids_;
  }
  if (uids.empty()) {
    r.detail = "the guest egress firewall was never installed";
    return r;
  }
  // The uid QEMU really runs as: every running guest of ours must be covered by the rules.
  const auto names = owned_domain_names();
  for (const auto& q : running_qemu_processes()) {
    if (std::find(uids.begin(), uids.end(), q.uid) == uids.end() &&
        std::find(names.begin(), names.end(), q.domain) != names.end()) {
      r.detail = "QEMU of " + q.domain + " (pid " + std::to_string(q.pid) + ") runs as uid " +
                 std::to_string(q.uid) + ", which the firewall does not match";
      return r;
    }
  }
  const auto state = firewall_->inspect(uids);
  if (!state.ok) {
    r.detail = state.detail;
    return r;
  }
  // The rules are in place; prove they work: as each of QEMU's uids, a connection to a
  // listener on this host must fail.
  const auto probe_timeout = std::chrono::milliseconds(1000);
  for (const auto uid : uids) {
    const unsigned gid = qemu_gid_.value_or(uid);
    for (const auto family : {ip_family::v4, ip_family::v6}) {
      const auto outcome = probe_local_connect(family, uid, gid, probe_timeout);
      const std::string loopback = family == ip_family::v4 ? "127.0.0.1" : "[::1]";
      if (outcome == probe_outcome::connected) {
        r.detail = "a process running as uid " + std::to_string(uid) + " reached a listener on " +
                   loopback + ": a rule lets QEMU's connections past the firewall";
        return r;
      }
      if (outcome == probe_outcome::unavailable && family == ip_family::v4) {
        r.detail = "cannot probe the firewall as uid " + std::to_string(uid) + " (not root?)";
        return r;
      }
    }
  }
  std::string reach = "nothing";
  if (config_.guest_internet) {
    reach = "public addresses";
    for (const auto& e : config_.guest_egress) {
      reach += (e.allow ? ", " : ", not ") + e.block.text();
    }
  }
  r.ok = true;
  r.hint.clear();
  r.detail =
      state.detail + "; connections as QEMU's uid to this host were refused; guests reach " + reach;
  return r;
}

std::vector<check_result> libvirt_driver::doctor() {
  std::vector<check_result> out;
  const auto timeout = config_.check_timeout;
  // A check that times out keeps running on its own thread, possibly after this driver is
  // gone: the checks capture copies and shared state, never `this`.
  const libvirt_config cfg = config_;
  const auto hint_libvirt =
      "start libvirtd (scripts/lib/libvirt.sh: libvirt_start) or check LIBVIRT_URI";
  {
    // connect() is bounded by itself; only the version call needs the box.
    const auto started = steady_clock::now();
    std::string why;
    const auto conn = connect(&why);
    check_result r;
    if (!conn) {
      r.name = "libvirt";
      r.detail = "cannot reach " + cfg.uri + ": " + why;
      r.hint = hint_libvirt;
    } else {
      const auto left = std::max(std::chrono::milliseconds(1),
                                 timeout - std::chrono::duration_cast<std::chrono::milliseconds>(
                                               steady_clock::now() - started));
      r = boxed_check("libvirt", left, [conn, uri = cfg.uri, hint_libvirt] {
        check_result c;
        unsigned long version = 0;
        if (virConnectGetLibVersion(conn->ptr, &version) != 0) {
          c.detail = "cannot reach " + uri + ": " + last_libvirt_error();
          c.hint = hint_libvirt;
          return c;
        }
        c.ok = true;
        c.detail = uri + ", libvirt " + std::to_string(version / 1000000) + "." +
                   std::to_string(version / 1000 % 1000) + "." + std::to_string(version % 1000);
        return c;
      });
    }
    r.latency_ms = std::chrono::duration<double, std::milli>(steady_clock::now() - started).count();
    out.push_back(std::move(r));
  }
  out.push_back(boxed_check("accelerator", timeout, [accel = accel_] {
    check_result r;
    r.ok = true;
    r.detail = accel == accel::kvm ? "kvm (hardware virtualisation)"
                                   : "tcg (emulation; no kvm_intel/kvm_amd on this host)";
    return r;
  }));
  out.push_back(boxed_check("guest_kernel", timeout, [cfg] {
    check_result r;
    std::error_code ec;
    const bool kernel = fs::is_regular_file(cfg.kernel, ec);
    const bool initrd = fs::is_regular_file(cfg.initrd, ec);
    r.ok = kernel && initrd;
    r.detail = (kernel ? "kernel " : "missing kernel ") + cfg.kernel.string() +
               (initrd ? ", initrd " : ", missing initrd ") + cfg.initrd.string();
    if (!r.ok) {
      r.hint = "set LITTERBOX_KERNEL and LITTERBOX_INITRD (apt-get install linux-image-amd64)";
    }
    return r;
  }));
  out.push_back(boxed_check("disk", timeout, [cfg] {
    check_result r;
    struct statvfs st {};
    if (::statvfs(cfg.state_dir.c_str(), &st) != 0) {
      r.detail = "cannot stat " + cfg.state_dir.string();
      return r;
    }
    const auto free_bytes = static_cast<unsigned long long>(st.f_bavail) * st.f_frsize;
    const unsigned long long min_bytes = 2ULL << 30U;
    r.ok = free_bytes >= min_bytes;
    r.detail = std::to_string(free_bytes >> 20U) + " MiB free in " + cfg.state_dir.string();
    if (!r.ok) {
      r.hint = "free space in LITTERBOX_STATE_DIR";
    }
    return r;
  }));
  if (config_.isolate_host) {
    out.push_back(boxed_check("guest_isolation", timeout,
                              [this, held = hold_for_check()] { return isolation_check(); }));
  }
  if (config_.ssh_port_min <= config_.ssh_port_max) {
    out.push_back(
        boxed_check("ssh_ports", timeout, [lo = config_.ssh_port_min, hi = config_.ssh_port_max] {
          return ssh_ports_check(lo, hi);
        }));
  }
  out.push_back(boxed_check(
      "guest_proxy", timeout,
      [links = links_, netns = config_.proxy_netns,
       every =
           std::chrono::duration_cast<std::chrono::seconds>(config_.firewall_interval).count()] {
        const auto state = links->inspect();
        check_result r;
        r.ok = state.ok;
        r.detail = state.detail;
        if (!r.ok) {
          r.hint = "litterboxd re-asserts the proxy namespace every " + std::to_string(every) +
                   " s; if this persists, look at `ip netns exec " + netns +
                   " nft list ruleset` for what else changes it";
        }
        return r;
      }));
  return out;
}

// ---- Templates and clones (issue 9) ----
//
// A template is a guest booted once like any host, stripped of its identity through the guest
// agent and saved by libvirt (virDomainSaveFlags) into <template dir>/state.sav; its disk is
// frozen (read-only) from then on. A clone is a transient domain restored from a save image
// made for it on the fly (state_feed): the template's header rewritten to name the clone,
// followed by the template's migration stream, fed through a FIFO so nothing is copied.

fs::path libvirt_driver::template_dir(std::string_view template_id) const {
  return config_.state_dir / "templates" / std::string(template_id);
}

namespace {

// The agent's "refused" means the image cannot be cloned at template time; on a clone of a
// saved template it is just a failed restore.
error as_restore_failure(error e) {
  if (e.code == errc::clone_unsupported) {
    e.code = errc::boot_failed;
  }
  return e;
}

// The clock of a restored guest stands where its template's stopped. The system clock is what
// the guest's programs read; its RTC matters only to its next boot, which a clone never has.
result<void> set_guest_clock(guest_agent& agent, clone_clock how) {
  if (how == clone_clock::date) {
    auto set = agent.set_system_clock_now();
    if (set || set.error().code != errc::clone_unsupported) {
      return set;
    }
    spdlog::debug("the guest agent refuses guest-exec ({}); the clock is set with guest-set-time",
                  set.error().message);
  }
  return agent.set_time_now();
}

long long ms_between(steady_clock::time_point a, steady_clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
}

std::string uuid_for(std::string_view host_id) {
  if (auto u = parse_uuid(host_id)) {
    return *u;
  }
  const std::string h = random_hex(16);
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) +
         "-" + h.substr(20);
}

bool write_file_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.flush()) {
      return false;
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  return !ec;
}

// QEMU's resident memory for `dom`, in KiB (libvirt reads it from /proc), or nullopt.
std::optional<unsigned long long> qemu_rss_kib(virDomainPtr dom) {
  std::array<virDomainMemoryStatStruct, VIR_DOMAIN_MEMORY_STAT_NR> stats{};
  const int n = virDomainMemoryStats(dom, stats.data(), stats.size(), 0);
  for (int i = 0; i < n; ++i) {
    if (stats[static_cast<std::size_t>(i)].tag == VIR_DOMAIN_MEMORY_STAT_RSS) {
      return stats[static_cast<std::size_t>(i)].val;
    }
  }
  return std::nullopt;
}

// Linux reports free pages to the balloon 2 s after they were freed, in batches: waits until
// QEMU's resident memory has stopped falling for a second (at most 8 s, and never past
// `deadline`). Returns how many MiB it fell.
long long settle_reported_memory(virDomainPtr dom, steady_clock::time_point deadline) {
  constexpr auto k_pause = std::chrono::milliseconds(250);
  constexpr auto k_quiet = std::chrono::milliseconds(1000);
  constexpr auto k_first_report = std::chrono::milliseconds(2500);
  const auto started = steady_clock::now();
  const auto until = std::min(deadline, started + std::chrono::seconds(8));
  const auto first = qemu_rss_kib(dom);
  if (!first) {
    return 0;
  }
  auto lowest = *first;
  auto fell_at = started;
  while (steady_clock::now() + k_pause < until) {
    std::this_thread::sleep_for(k_pause);
    const auto rss = qemu_rss_kib(dom);
    if (!rss) {
      break;
    }
    const auto now = steady_clock::now();
    if (*rss + 1024 < lowest) {
      lowest = *rss;
      fell_at = now;
    } else if (now - started >= k_first_report && now - fell_at >= k_quiet) {
      break;
    }
  }
  return static_cast<long long>((*first - std::min(*first, lowest)) >> 10U);
}

std::optional<std::string> read_small_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return std::nullopt;
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text;
}

}  // namespace

result<void> libvirt_driver::await_host_key(const vm_spec& spec, steady_clock::time_point deadline,
                                            ssh_connection* early) {
  std::string last_probe = "no SSH handshake yet";
  while (true) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady_clock::now());
    if (left.count() <= 0) {
      break;
    }
    const auto budget =
        std::clamp(left, std::chrono::milliseconds(200), std::chrono::milliseconds(5000));
    const auto probe =
        early != nullptr && early->is_open()
            ? probe_host_key(std::move(*early), spec.ssh_host, spec.ssh_port,
                             spec.host_key.public_line, budget)
            : probe_host_key(spec.ssh_host, spec.ssh_port, spec.host_key.public_line, budget);
    if (probe.status == probe_status::matched) {
      return {};
    }
    if (probe.status == probe_status::mismatch) {
      return make_error(errc::host_key_mismatch, "the SSH endpoint " + spec.ssh_host + ":" +
                                                     std::to_string(spec.ssh_port) +
                                                     " did not present the pinned key");
    }
    last_probe = probe.detail;
    if (const auto conn = connect()) {
      const domain_ptr dom(virDomainLookupByName(conn->ptr, spec.name.c_str()));
      if (!dom && last_libvirt_code() == VIR_ERR_NO_DOMAIN) {
        return make_error(errc::boot_failed, "the clone's domain disappeared");
      }
    }
    std::this_thread::sleep_for(std::min(config_.poll_interval, std::chrono::milliseconds(50)));
  }
  return make_error(errc::boot_timeout, "the clone's SSH endpoint did not answer: " + last_probe);
}

result<void> libvirt_driver::build_template(const template_spec& spec,
                                            steady_clock::time_point deadline) {
  const std::string& id = spec.template_id;
  if (!valid_host_id(id)) {
    return make_error(errc::vm_create_failed, "malformed template id");
  }
  if (!spec.guest.authorized_keys.empty() || !spec.guest.env.empty()) {
    return make_error(errc::vm_create_failed, "a template guest has no login keys and no env");
  }
  if (auto ok = validate_login(spec.guest); !ok) {
    return ok.error();
  }
  {
    const std::lock_guard lock(building_mutex_);
    if (!building_.insert(id).second) {
      return make_error(errc::vm_create_failed, "template " + id + " is being built already");
    }
  }
  struct unmark {
    libvirt_driver& d;
    const std::string& id;
    ~unmark() {
      const std::lock_guard lock(d.building_mutex_);
      d.building_.erase(id);
    }
  } const building_guard{*this, id};
  std::string why;
  const auto conn = connect(&why);
  if (!conn) {
    return make_error(errc::unavailable, "libvirt is unreachable: " + why);
  }
  if (auto gone = destroy_template(id); !gone) {
    return gone.error();
  }
  if (auto free = forward_free(spec.guest); !free) {
    return free.error();
  }
  std::error_code ec;
  fs::create_directories(config_.state_dir / "templates", ec);
  fs::permissions(config_.state_dir / "templates",
                  fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec, ec);
  auto fail = [&](error e) -> result<void> {
    (void)destroy_template(id);
    return e;
  };

  // The template guest boots as a host would, with the template id as its cloud-init
  // instance id, so that the scrub below knows where cloud-init keeps its copy of the seed.
  vm_spec boot = spec.guest;
  boot.host_id = id;
  const template_paths paths{template_dir(id)};
  auto xml = make_guest(boot, paths.dir, true);
  if (!xml) {
    return fail(xml.error());
  }
  const domain_ptr dom(virDomainCreateXML(conn->ptr, xml->c_str(),
                                          config_.start_paused ? VIR_DOMAIN_START_PAUSED : 0));
  if (!dom) {
    const auto start_error = last_libvirt_error();
    return fail(
        make_error(is_forward_bind_failure(start_error) ? errc::port_busy : errc::vm_create_failed,
                   "cannot start the template guest: " + start_error));
  }
  if (auto run = link_and_resume(*links_, dom.get(), id, true, config_.start_paused); !run) {
    return fail(run.error());
  }
  const auto t_started = steady_clock::now();
  if (auto ready = await_ready(boot, paths.console(), deadline); !ready) {
    return fail(ready.error());
  }
  const auto t_ready = steady_clock::now();

  guest_agent agent(dom.get(), deadline);
  const auto bound = config_.agent_connect_timeout;
  if (auto up = agent.wait_connected(steady_clock::now() + bound); !up) {
    return fail(make_error(
        errc::clone_unsupported,
        "the image cannot be cloned: its guest agent (qemu-guest-agent on the virtio-serial "
        "channel org.qemu.guest_agent.0) did not answer within " +
            std::to_string(bound.count() / 1000) + " s of the guest being ready (" +
            up.error().message + ")"));
  }
  if (auto t = set_guest_clock(agent, config_.clock); !t) {
    if (t.error().code == errc::clone_unsupported) {
      return fail(make_error(errc::clone_unsupported,
                             "the image cannot be cloned: its guest agent cannot set the clock "
                             "(neither guest-exec of /bin/date nor guest-set-time, which needs "
                             "/sbin/hwclock, package util-linux-extra): " +
                                 t.error().message));
    }
    return fail(t.error());
  }
  for (const auto& path : template_scrub_paths(boot.ssh_username, id)) {
    if (auto w = agent.write_file(path, ""); !w) {
      if (w.error().code == errc::clone_unsupported) {
        return fail(make_error(errc::clone_unsupported,
                               "the image cannot be cloned: its guest agent does not allow "
                               "writing files (guest-file-open/write/close): " +
                                   w.error().message));
      }
      return fail(w.error());
    }
  }
  // Best effort, all: fstrim discards the blocks the scrub freed (the clones' disks share
  // them). The state file, which every restore reads, holds every page that is not zero:
  // dropping the page cache and slabs frees memory, compaction gathers it into the 2 MiB
  // blocks free page reporting hands back to QEMU, which drops them, so they save as zero.
  (void)agent.fstrim();
  (void)agent.write_file("/proc/sys/vm/drop_caches", "3");
  (void)agent.write_file("/proc/sys/vm/compact_memory", "1");
  const long long reported_mib = settle_reported_memory(dom.get(), deadline);

  const auto t_scrubbed = steady_clock::now();
  if (virDomainSaveFlags(dom.get(), paths.state().c_str(), nullptr, VIR_DOMAIN_SAVE_RUNNING) != 0) {
    return fail(make_error(errc::vm_create_failed,
                           "cannot save the template guest: " + last_libvirt_error()));
  }
  // Frozen: the saved memory holds this disk's page cache and filesystem state, so nothing
  // may write it again. The seed held the template guest's throwaway key and token.
  ::chmod(paths.disk().c_str(), 0444);
  const auto seed_size = fs::file_size(paths.seed(), ec);
  if (ec || ::truncate(paths.seed().c_str(), 0) != 0 ||
      ::truncate(paths.seed().c_str(), static_cast<off_t>(seed_size)) != 0) {
    return fail(make_error(errc::vm_create_failed, "cannot blank the template's seed"));
  }
  auto head = read_save_head(paths.state());
  if (!head) {
    return fail(make_error(
        errc::vm_create_failed,
        "libvirt wrote a state file clones cannot be made from: " + head.error().message));
  }
  // Whatever clone_domain_xml needs from the saved XML is checked now, not at the first clone.
  clone_names probe_names{id,
                          paths.disk(),
                          paths.console(),
                          id,
                          "probe",
                          uuid_for(id),
                          "/probe/disk.qcow2",
                          "/probe/console.log",
                          "127.0.0.1",
                          1,
                          proxy_tap_name(id),
                          "lbp000000000000"};
  if (auto x = clone_domain_xml(head->xml, probe_names); !x) {
    return fail(x.error());
  } else if (auto h = render_save_head(*head, *x); !h) {
    return fail(h.error());
  }
  template_info info{key_of(spec.guest), spec.guest.ssh_username, spec.guest.name,
                     accel_ == accel::kvm ? "kvm" : "tcg"};
  if (!write_file_atomically(paths.info(), render_template_info(info))) {
    return fail(make_error(errc::vm_create_failed, "cannot write the template's info file"));
  }
  spdlog::info(
      "template {}: booted in {} ms, stripped in {} ms ({} MiB of freed memory handed back), "
      "saved in {} ms ({} MiB)",
      id, ms_between(t_started, t_ready), ms_between(t_ready, t_scrubbed), reported_mib,
      ms_between(t_scrubbed, steady_clock::now()), fs::file_size(paths.state(), ec) >> 20U);
  return {};
}

result<void> libvirt_driver::restore_clone(std::string_view template_id, const vm_spec& spec,
                                           steady_clock::time_point deadline) {
  if (!valid_host_id(spec.host_id)) {
    return make_error(errc::vm_create_failed, "malformed host id");
  }
  if (!valid_host_id(template_id)) {
    return make_error(errc::template_missing, "malformed template id");
  }
  const template_paths t{template_dir(template_id)};
  const auto info_text = read_small_file(t.info());
  if (!info_text) {
    return make_error(errc::template_missing, "no saved template " + std::string(template_id));
  }
  auto info = parse_template_info(*info_text);
  if (!info) {
    return info.error();
  }
  if (const std::string running = accel_ == accel::kvm ? "kvm" : "tcg"; info->accel != running) {
    return make_error(errc::template_missing, "the template was saved under " + info->accel +
                                                  " and this driver runs " + running +
                                                  " guests: it must be rebuilt");
  }
  if (info->key != key_of(spec) || info->ssh_username != spec.ssh_username) {
    return make_error(errc::vm_create_failed,
                      "the host's image, size or user differ from the template's");
  }
  // Everything the guest will be given is checked before anything is made.
  auto files = identity_files(spec, random_hex(16));
  if (!files) {
    return files.error();
  }
  auto head = read_save_head(t.state());
  if (!head) {
    return head.error();
  }
  const auto t_started = steady_clock::now();
  std::string why;
  const auto conn = connect(&why);
  if (!conn) {
    return make_error(errc::unavailable, "libvirt is unreachable: " + why);
  }
  if (auto gone = destroy(spec.host_id); !gone) {
    return gone.error();
  }
  if (auto free = forward_free(spec); !free) {
    return free.error();
  }
  auto fail = [&](error e) -> result<void> {
    (void)destroy(spec.host_id);
    return e;
  };

  const fs::path dir = host_dir(spec.host_id);
  std::error_code ec;
  fs::create_directory(dir, ec);
  if (ec) {
    return fail(
        make_error(errc::vm_create_failed, "cannot create the host directory: " + ec.message()));
  }
  fs::permissions(dir, fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec, ec);
  // Same virtual size as the template's disk: the guest's memory already knows that size.
  const fs::path disk = dir / "disk.qcow2";
  if (auto made = images_.create_clone_overlay(t.disk(), disk); !made) {
    return fail(made.error());
  }
  ::chmod(disk.c_str(), 0600);
  const fs::path console_path = dir / "console.log";
  if (!create_private_file(console_path) || !chown_to(disk, qemu_uid_, qemu_gid_) ||
      !chown_to(console_path, qemu_uid_, qemu_gid_)) {
    return fail(make_error(errc::vm_create_failed, "cannot prepare the clone's files"));
  }

  clone_names names{std::string(template_id),
                    t.disk(),
                    t.console(),
                    spec.host_id,
                    spec.name,
                    uuid_for(spec.host_id),
                    disk,
                    console_path,
                    spec.ssh_host,
                    spec.ssh_port,
                    proxy_tap_name(template_id),
                    proxy_tap_name(spec.host_id)};
  auto xml = clone_domain_xml(head->xml, names);
  if (!xml) {
    return fail(xml.error());
  }
  auto head_bytes = render_save_head(*head, *xml);
  if (!head_bytes) {
    return fail(head_bytes.error());
  }
  const auto t_prepared = steady_clock::now();
  auto feed = state_feed::start(dir / "restore.fifo", std::move(*head_bytes), t.state(),
                                head->stream_offset());
  if (!feed) {
    return fail(feed.error());
  }
  // libvirt waits for QEMU's incoming migration without a timeout of its own; a stalled one
  // (QEMU or the feed stuck) is ended at the deadline by destroying the half-restored domain.
  std::mutex watch_mutex;
  std::condition_variable watch_cv;
  bool restore_returned = false;
  bool watchdog_fired = false;
  std::thread watchdog([&] {
    std::unique_lock lock(watch_mutex);
    if (watch_cv.wait_until(lock, deadline, [&] { return restore_returned; })) {
      return;
    }
    watchdog_fired = true;
    const domain_ptr stuck(virDomainLookupByName(conn->ptr, spec.name.c_str()));
    if (stuck) {
      (void)virDomainDestroy(stuck.get());
    }
  });
  const int restored = virDomainRestoreFlags(
      conn->ptr, ((*feed)->fifo()).c_str(), nullptr,
      config_.start_paused ? VIR_DOMAIN_SAVE_PAUSED : VIR_DOMAIN_SAVE_RUNNING);
  const std::string restore_error = restored != 0 ? last_libvirt_error() : std::string();
  {
    const std::lock_guard lock(watch_mutex);
    restore_returned = true;
  }
  watch_cv.notify_all();
  watchdog.join();
  (*feed)->stop();
  if (watchdog_fired) {
    return fail(make_error(errc::boot_timeout, "the clone was not restored in time"));
  }
  if (restored != 0) {
    return fail(make_error(
        is_forward_bind_failure(restore_error) ? errc::port_busy : errc::vm_create_failed,
        "cannot restore the clone: " + restore_error));
  }
  const domain_ptr dom(virDomainLookupByName(conn->ptr, spec.name.c_str()));
  if (!dom) {
    return fail(make_error(errc::boot_failed, "the restored clone is gone"));
  }
  if (auto run = link_and_resume(*links_, dom.get(), spec.host_id, false, config_.start_paused);
      !run) {
    return fail(run.error());
  }

  const auto t_restored = steady_clock::now();
  // Re-identification, before anything can log in: the saved guest has no host key (sshd
  // refuses every connection) and no login until the files below are written.
  guest_agent agent(dom.get(), deadline);
  if (auto up = agent.wait_connected(deadline); !up) {
    return fail(as_restore_failure(up.error()));
  }
  const auto t_agent = steady_clock::now();
  // libvirt gave the clone a new VM generation id, which makes the guest kernel reseed its
  // RNG; host randomness mixed in on top costs one write, before sshd can start anything.
  std::string seed(64, '\0');
  random_bytes(seed.data(), seed.size());
  if (auto w = agent.write_file("/dev/urandom", seed); !w) {
    return fail(as_restore_failure(w.error()));
  }
  const auto write_files = [&](std::size_t from, std::size_t to) -> result<void> {
    for (std::size_t i = from; i < to; ++i) {
      if (auto w = agent.write_file((*files)[i].path, (*files)[i].content); !w) {
        return as_restore_failure(w.error());
      }
    }
    return {};
  };
  if (auto w = write_files(0, k_host_key_files); !w) {
    return fail(w.error());
  }
  // The readiness probe's connection, opened now: sshd's start-up for it (a fork and an exec,
  // which read the key just written) runs while the clock and the rest are set; its
  // handshake runs once everything is in place.
  auto early = ssh_connection::open(spec.ssh_host, spec.ssh_port, std::chrono::milliseconds(1000));
  const auto t_key = steady_clock::now();
  // The restored guest's clock stands where the template's stopped. (Syncing it from the RTC
  // instead, `hwclock -s`, which sleeps rather than spins, left clones 1.3 s off.)
  if (auto tm = set_guest_clock(agent, config_.clock); !tm) {
    return fail(as_restore_failure(tm.error()));
  }
  const auto t_clock = steady_clock::now();
  if (auto w = write_files(k_host_key_files, files->size()); !w) {
    return fail(w.error());
  }
  const auto t_identified = steady_clock::now();
  if (auto ready = await_host_key(spec, deadline, &early); !ready) {
    return fail(ready.error());
  }
  clone_timing timing;
  timing.host_id = spec.host_id;
  timing.prepare_ms = ms_between(t_started, t_prepared);
  timing.restore_ms = ms_between(t_prepared, t_restored);
  timing.agent_ms = ms_between(t_restored, t_agent);
  timing.host_key_ms = ms_between(t_agent, t_key);
  timing.clock_ms = ms_between(t_key, t_clock);
  timing.files_ms = ms_between(t_clock, t_identified);
  timing.ssh_ms = ms_between(t_identified, steady_clock::now());
  timing.total_ms = ms_between(t_started, steady_clock::now());
  timing.agent_commands = agent.commands();
  spdlog::debug(
      "host {}: clone of {} in {} ms: files {} ms, restore {} ms, agent {} ms, host key {} ms, "
      "clock {} ms, identity {} ms ({} agent commands), SSH {} ms",
      spec.host_id, template_id, timing.total_ms, timing.prepare_ms, timing.restore_ms,
      timing.agent_ms, timing.host_key_ms, timing.clock_ms, timing.files_ms, timing.agent_commands,
      timing.ssh_ms);
  if (config_.on_timing) {
    config_.on_timing(timing);
  }
  return {};
}

result<void> libvirt_driver::apply_login(const vm_spec& spec, steady_clock::time_point deadline) {
  const auto t_called = steady_clock::now();
  if (!valid_host_id(spec.host_id)) {
    return make_error(errc::not_found, "malformed host id");
  }
  auto files = login_files(spec);
  if (!files) {
    return files.error();
  }
  std::string why;
  const auto conn = connect(&why);
  if (!conn) {
    return make_error(errc::unavailable, "libvirt is unreachable: " + why);
  }
  const domain_ptr dom(virDomainLookupByName(conn->ptr, spec.name.c_str()));
  if (!dom || virDomainIsActive(dom.get()) != 1) {
    return make_error(errc::not_found, "no running host " + spec.host_id);
  }
  char* meta = virDomainGetMetadata(dom.get(), VIR_DOMAIN_METADATA_ELEMENT,
                                    std::string(k_metadata_ns).c_str(), 0);
  const std::string owner_id = meta != nullptr ? metadata_host_id(meta, config_.owner) : "";
  std::free(meta);
  if (owner_id != spec.host_id) {
    return make_error(errc::not_found, "no running host " + spec.host_id);
  }
  // The handshake's connection first: sshd starts its process for it while the login is
  // written, and the key exchange runs after.
  auto early = ssh_connection::open(spec.ssh_host, spec.ssh_port, std::chrono::milliseconds(1000));
  const auto t_started = steady_clock::now();
  guest_agent agent(dom.get(), deadline);
  for (const auto& f : *files) {
    if (auto w = agent.write_file(f.path, f.content); !w) {
      return as_restore_failure(w.error());
    }
  }
  const auto t_written = steady_clock::now();
  // Ready still means usable: the same proof as a boot's, through the address handed out.
  if (auto ready = await_host_key(spec, deadline, &early); !ready) {
    return ready.error();
  }
  clone_timing timing;
  timing.is_restore = false;
  timing.host_id = spec.host_id;
  timing.prepare_ms = ms_between(t_called, t_started);
  timing.files_ms = ms_between(t_started, t_written);
  timing.ssh_ms = ms_between(t_written, steady_clock::now());
  timing.total_ms = ms_between(t_called, steady_clock::now());
  timing.agent_commands = agent.commands();
  spdlog::debug(
      "host {}: login applied in {} ms: lookup {} ms, files {} ms ({} agent commands), "
      "SSH {} ms",
      spec.host_id, timing.total_ms, timing.prepare_ms, timing.files_ms, timing.agent_commands,
      timing.ssh_ms);
  if (config_.on_timing) {
    config_.on_timing(timing);
  }
  return {};
}

result<void> libvirt_driver::destroy_template(std::string_view template_id) {
  if (!valid_host_id(template_id)) {
    return make_error(errc::teardown_failed, "malformed template id");
  }
  if (const auto tap = proxy_tap_name(template_id); !tap.empty()) {
    if (auto gone = links_->remove(std::string(template_id), tap); !gone) {
      return gone.error();
    }
  }
  return remove_tagged(metadata_template_id, template_id, "template guest",
                       template_dir(template_id));
}

result<std::vector<std::string>> libvirt_driver::list_templates() {
  return owned_ids(metadata_template_id, config_.state_dir / "templates");
}

}  // namespace litterbox::hypervisor
