#include "controlplane/core/instance_heartbeat.hpp"

#include "base/log.hpp"

#include <spdlog/spdlog.h>

#include <array>
#include <unistd.h>

namespace litterbox::controlplane {
namespace {

std::string local_hostname() {
  std::array<char, 256> buf{};
  if (gethostname(buf.data(), buf.size() - 1) != 0) {
    return "unknown";
  }
  return buf.data();
}

}  // namespace

instance_heartbeat::instance_heartbeat(store& db, const clock& clk, std::string instance_id,
                                       std::chrono::seconds interval)
    : db_(db), clock_(clk), id_(std::move(instance_id)), interval_(interval) {
  if (!beat()) {
    spdlog::warn("database unavailable at start-up; heartbeats will retry");
  }
  thread_ = std::thread([this] { loop(); });
}

instance_heartbeat::~instance_heartbeat() {
  stop();
}

result<void> instance_heartbeat::beat() {
  auto r = db_.heartbeat(id_, local_hostname(), getpid(), interval_, clock_.now());
  if (r) {
    const std::lock_guard lock(mutex_);
    registered_ = true;
  }
  return r;
}

result<void> instance_heartbeat::ensure_registered() {
  {
    const std::lock_guard lock(mutex_);
    if (registered_) {
      return {};
    }
  }
  return beat();
}

void instance_heartbeat::loop() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    cv_.wait_for(lock, interval_, [this] { return stopping_; });
    if (stopping_) {
      return;
    }
    lock.unlock();
    if (auto r = beat(); !r) {
      spdlog::warn("heartbeat failed: {}", log_escape(r.error().message));
    }
    lock.lock();
  }
}

void instance_heartbeat::stop() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
}

}  // namespace litterbox::controlplane
