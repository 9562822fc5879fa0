#pragma once

#include "base/result.hpp"
#include "controlplane/pg/session_limits.hpp"

#include <pqxx/connection>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace litterbox::controlplane::pg {

/// A bounded set of PostgreSQL connections shared by threads. Connections are opened on
/// demand (never in the constructor), handed out one per caller, and dropped when a caller
/// reports them broken, so the pool heals by itself after the server restarts.
class connection_pool {
 public:
  /// Runs on every freshly opened connection (e.g. to register prepared statements).
  using on_connect = std::function<void(pqxx::connection&)>;

  /// A borrowed connection; gives it back (or drops it if marked broken) when destroyed.
  class lease {
   public:
    lease(connection_pool& pool, std::unique_ptr<pqxx::connection> conn, bool fresh);
    lease(const lease&) = delete;
    lease& operator=(const lease&) = delete;
    lease(lease&& other) noexcept;
    lease& operator=(lease&&) = delete;
    ~lease();

    pqxx::connection& conn() { return *conn_; }
    /// True when the connection was opened for this lease rather than reused.
    bool fresh() const { return fresh_; }
    /// The connection is unusable: close it instead of returning it to the pool.
    void mark_broken() { broken_ = true; }

   private:
    connection_pool* pool_;
    std::unique_ptr<pqxx::connection> conn_;
    bool fresh_;
    bool broken_ = false;
    std::uint64_t watch_ = 0;  ///< its entry in the pool's watchdog, 0 for none
  };

  /// `size` bounds the connections open at once; `acquire_timeout` bounds how long acquire
  /// waits for one to come back. `call_timeout` (0: none) bounds how long a lease may be
  /// held: past it a watchdog shuts the connection's socket down, so a call blocked on a
  /// server that stopped answering (a stopped or wedged process still ACKs every packet,
  /// so no TCP timeout fires) fails as a lost connection instead of waiting for ever.
  connection_pool(std::string url, std::size_t size, std::chrono::milliseconds acquire_timeout,
                  on_connect setup,
                  std::chrono::milliseconds call_timeout = std::chrono::milliseconds(0));
  connection_pool(const connection_pool&) = delete;
  connection_pool& operator=(const connection_pool&) = delete;
  connection_pool(connection_pool&&) = delete;
  connection_pool& operator=(connection_pool&&) = delete;
  ~connection_pool();

  /// Borrows an idle connection or opens a new one. Blocks while all `size` are in use, up to
  /// the acquire timeout. Errors: controlplane::errc::unavailable (timeout, or the server
  /// refused the connection). Thread-safe.
  result<lease> acquire();

  /// Closes every idle connection (after one was found broken the others usually are too).
  void drop_idle();

 private:
  void give_back(std::unique_ptr<pqxx::connection> conn, bool broken);
  std::uint64_t watch(const pqxx::connection& conn);
  void unwatch(std::uint64_t id);
  void run_watchdog();

  const std::string url_;
  const std::size_t size_;
  const std::chrono::milliseconds acquire_timeout_;
  const on_connect setup_;

  std::mutex mutex_;
  std::condition_variable available_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_;
  std::size_t open_ = 0;  // leased + idle + being opened

  /// A leased connection's socket (our own dup of it: shutting it down reaches the socket
  /// even if the connection closed its descriptor meanwhile) and when the lease expires.
  struct watched {
    int fd = -1;
    std::chrono::steady_clock::time_point deadline;
    bool fired = false;
  };
  const std::chrono::milliseconds call_timeout_;
  std::mutex watch_mutex_;
  std::condition_variable watch_cv_;
  std::map<std::uint64_t, watched> watched_;
  std::uint64_t next_watch_ = 1;
  bool stopping_ = false;
  std::thread watchdog_;
};

/// `url` with a libpq connect_timeout added unless it names one, so a server that does not
/// answer cannot block a caller for the kernel's TCP timeout.
std::string with_connect_timeout(std::string url, int seconds);

/// `url` (a libpq URI or key=value string) as a key=value connection string with `limits`
/// added for every parameter it does not set itself: what the operator wrote in DATABASE_URL
/// wins, key by key, and inside `options` GUC by GUC (`-c statement_timeout=…` there is kept,
/// the other bounds are appended). Errors: internal when libpq cannot parse `url` (the
/// message never repeats the URL, which may carry a password).
result<std::string> with_session_limits(const std::string& url, const session_limits& limits);

}  // namespace litterbox::controlplane::pg
