#include "controlplane/pg/event_listener.hpp"

#include "base/log.hpp"

#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include <exception>
#include <utility>

namespace litterbox::controlplane::pg {
namespace {

class receiver final : public pqxx::notification_receiver {
 public:
  receiver(pqxx::connection_base& c, const std::string& channel,
           const std::function<void()>& on_events)
      : pqxx::notification_receiver(c, channel), on_events_(on_events) {}
  void operator()(const std::string& /*payload*/, int /*backend_pid*/) override { on_events_(); }

 private:
  const std::function<void()>& on_events_;
};

}  // namespace

event_listener::event_listener(std::string url, std::string channel,
                               std::function<void()> on_events, std::function<void()> on_lost,
                               std::chrono::milliseconds retry)
    : url_(std::move(url)),
      channel_(std::move(channel)),
      on_events_(std::move(on_events)),
      on_lost_(std::move(on_lost)),
      retry_(retry) {}

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
      receiver r(conn, channel_, on_events_);
      // LISTEN is in place: whatever committed before it is read from the table now.
      on_events_();
      if (warned) {
        spdlog::info("{}: listening for notifications again", channel_);
        warned = false;
      }
      while (!stopping()) {
        conn.await_notification(1, 0);  // bounded, so stop() is seen
      }
      return;
    } catch (const std::exception& e) {
      if (on_lost_) {
        on_lost_();
      }
      if (!warned) {
        // The message is libpq's: no statement, no password (libpq never echoes it).
        std::string msg = e.what();
        if (const auto nl = msg.find('\n'); nl != std::string::npos) {
          msg.resize(nl);
        }
        spdlog::warn("{}: LISTEN connection lost ({}); retrying every {} ms", channel_,
                     log_escape(msg), retry_.count());
        warned = true;
      }
    }
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, retry_, [this] { return stopping_; });
  }
}

}  // namespace litterbox::controlplane::pg
