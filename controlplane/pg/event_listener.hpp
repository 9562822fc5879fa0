#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace litterbox::controlplane::pg {

/// The channel the hosts_events trigger notifies (migration 0004).
inline constexpr const char* k_events_channel = "litterbox_events";
/// The channel every change of api_keys notifies (migration 0006).
inline constexpr const char* k_keys_channel = "litterbox_keys";

/// LISTENs on `channel` on a connection of its own, and calls `on_events` (on its thread)
/// for every notification and after every (re)connect, since notifications sent while
/// disconnected are lost (the tables are the truth; this only wakes readers), and `on_lost`
/// (if set) as soon as the connection is lost. Reconnects every `retry` while the database
/// is away.
class event_listener {
 public:
  event_listener(std::string url, std::string channel, std::function<void()> on_events,
                 std::function<void()> on_lost = {},
                 std::chrono::milliseconds retry = std::chrono::seconds(1));
  ~event_listener();
  event_listener(const event_listener&) = delete;
  event_listener& operator=(const event_listener&) = delete;

  /// Starts listening on a background thread.
  void start();
  /// Stops within about a second (the wait for a notification is bounded).
  void stop();

 private:
  void run();
  bool stopping();

  std::string url_;
  std::string channel_;
  std::function<void()> on_events_;
  std::function<void()> on_lost_;
  std::chrono::milliseconds retry_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace litterbox::controlplane::pg
