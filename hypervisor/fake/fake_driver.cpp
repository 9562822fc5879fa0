#include "hypervisor/fake/fake_driver.hpp"

#include "base/secret.hpp"
#include "hypervisor/errc.hpp"

#include <algorithm>
#include <fstream>
#include <thread>

namespace litterbox::hypervisor {

namespace fs = std::filesystem;

namespace {

// The libvirt driver's rule: every resource is named from the id, so only hex and dashes.
bool valid_host_id(std::string_view id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '-';
  });
}

}  // namespace

fake_driver::fake_driver(fake_options options) : options_(std::move(options)) {
  if (options_.state_dir) {
    fs::create_directories(*options_.state_dir);
  }
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

result<std::string> fake_driver::prepare_image(std::string_view image) {
  if (auto e = injected(fake_phase::prepare_image)) {
    return *e;
  }
  if (image.find("missing") != std::string_view::npos) {
    return make_error(errc::image_not_found, "manifest unknown: " + std::string(image));
  }
  if (image.find("corrupt") != std::string_view::npos) {
    return make_error(errc::image_corrupt, "blob digest mismatch in " + std::string(image));
  }
  const std::string digest = "sha256:" + sha256_hex(image);
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
  if (!valid_host_id(spec.host_id)) {
    return make_error(errc::vm_create_failed, "malformed host id");
  }
  wait(options_.create_delay);
  if (spec.image.find("fail-create") != std::string::npos) {
    return make_error(errc::vm_create_failed, "domain failed to start");
  }
  const std::lock_guard lock(mutex_);
  vms_[spec.host_id] = spec;
  if (options_.state_dir) {
    std::ofstream(*options_.state_dir / (spec.host_id + ".vm")) << spec.name << '\n';
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
  std::set<std::string> ids;
  for (const auto& [id, spec] : vms_) {
    ids.insert(id);
  }
  if (options_.state_dir) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(*options_.state_dir, ec)) {
      if (entry.path().extension() == ".vm") {
        ids.insert(entry.path().stem().string());
      }
    }
  }
  return std::vector<std::string>(ids.begin(), ids.end());
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

void fake_driver::set_failure(fake_phase phase, std::optional<error> e) {
  const std::lock_guard lock(mutex_);
  if (e) {
    failures_[phase] = *e;
  } else {
    failures_.erase(phase);
  }
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

}  // namespace litterbox::hypervisor
