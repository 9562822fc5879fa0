#include "controlplane/pg/event_listener.hpp"

#include "base/log.hpp"

#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include <exception>
#include <utility>

namespace litterbox::controlplane::pg {
namespace {

// The channel record_host_event() notifies.
constexpr const char* k_channel = "litterbox_events";

class receiver final : public pqxx::notification_receiver {
 public:
  receiver(pqxx::connection_base& c, const std::function<void()>& on_events)
      : pqxx::notification_receiver(c, k_channel), on_events_(on_events) {}
  void operator()(const std::string& /*payload*/, int /*backend_pid*/) override { on_events_(); }

 private:
  const std::function<void()>& on_events_;
};

}  // namespace

event_listener::event_listener(std::string url, std::function<void()> on_events,
                               std::chrono::milliseconds retry)
    : url_(std::move(url)), on_events_(std::move(on_events)), retry_(retry) {}

event_listener::~event_listener() {
  stop();
}

void event_listener::start() {
  const std::lock_guard lock(mutex_);
  if (!thread_.joinable() && !stopping_) {
    thread_ = std::thread([this] { run(); });
  }
}

void event_listener::stop() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
}

bool event_listener::stopping() {
  const std::lock_guard lock(mutex_);
  return stopping_;
}

void event_listener::run() {
  bool warned = false;
  while (!stopping()) {
    try {
      pqxx::connection conn(url_);
      receiver r(conn, on_events_);
      // LISTEN is in place: whatever committed before it is read from the table now.
      on_events_();
      if (warned) {
        spdlog::info("events: listening for notifications again");
        warned = false;
      }
      while (!stopping()) {
        conn.await_notification(1, 0);  // bounded, so stop() is seen
      }
      return;
    } catch (const std::exception& e) {
      if (!warned) {
        // The message is libpq's: no statement, no password (libpq never echoes it).
        std::string msg = e.what();
        if (const auto nl = msg.find('\n'); nl != std::string::npos) {
          msg.resize(nl);
        }
        spdlog::warn("events: LISTEN connection lost ({}); streams poll until it is back",
                     log_escape(msg));
        warned = true;
      }
    }
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, retry_, [this] { return stopping_; });
  }
}

}  // namespace litterbox::controlplane::pg
