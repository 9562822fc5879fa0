#include "controlplane/pg/connection_pool.hpp"

#include "controlplane/core/errc.hpp"

#include <pqxx/except>

#include <utility>

namespace litterbox::controlplane::pg {

connection_pool::lease::lease(connection_pool& pool, std::unique_ptr<pqxx::connection> conn,
                              bool fresh)
    : pool_(&pool), conn_(std::move(conn)), fresh_(fresh) {}

connection_pool::lease::lease(lease&& other) noexcept
    : pool_(other.pool_),
      conn_(std::move(other.conn_)),
      fresh_(other.fresh_),
      broken_(other.broken_) {}

connection_pool::lease::~lease() {
  if (conn_) {
    pool_->give_back(std::move(conn_), broken_);
  }
}

connection_pool::connection_pool(std::string url, std::size_t size,
                                 std::chrono::milliseconds acquire_timeout, on_connect setup)
    : url_(std::move(url)),
      size_(size == 0 ? 1 : size),
      acquire_timeout_(acquire_timeout),
      setup_(std::move(setup)) {}

connection_pool::~connection_pool() = default;

result<connection_pool::lease> connection_pool::acquire() {
  {
    std::unique_lock lock(mutex_);
    const bool ready = available_.wait_for(lock, acquire_timeout_,
                                           [&] { return !idle_.empty() || open_ < size_; });
    if (!ready) {
      return make_error(errc::unavailable, "database unavailable: no free connection");
    }
    if (!idle_.empty()) {
      auto conn = std::move(idle_.back());
      idle_.pop_back();
      return lease(*this, std::move(conn), false);
    }
    ++open_;
  }
  // Opening happens outside the lock: it is a network round trip and may fail.
  try {
    auto conn = std::make_unique<pqxx::connection>(url_);
    if (setup_) {
      setup_(*conn);
    }
    return lease(*this, std::move(conn), true);
  } catch (const std::exception&) {
    // The message may echo the connection string (with its password): never pass it on.
    {
      std::lock_guard lock(mutex_);
      --open_;
    }
    available_.notify_one();
    return make_error(errc::unavailable, "database unavailable");
  }
}

void connection_pool::drop_idle() {
  std::vector<std::unique_ptr<pqxx::connection>> dropped;
  {
    std::lock_guard lock(mutex_);
    dropped.swap(idle_);
    open_ -= dropped.size();
  }
  available_.notify_all();
  // `dropped` closes its connections here, outside the lock.
}

void connection_pool::give_back(std::unique_ptr<pqxx::connection> conn, bool broken) {
  if (broken || !conn->is_open()) {
    conn.reset();
    {
      std::lock_guard lock(mutex_);
      --open_;
    }
  } else {
    std::lock_guard lock(mutex_);
    idle_.push_back(std::move(conn));
  }
  available_.notify_one();
}

std::string with_connect_timeout(std::string url, int seconds) {
  if (url.find("connect_timeout") != std::string::npos) {
    return url;
  }
  const std::string value = std::to_string(seconds);
  const bool is_uri = url.rfind("postgresql://", 0) == 0 || url.rfind("postgres://", 0) == 0;
  if (!is_uri) {
    url += (url.empty() ? "" : " ");
  } else {
    url += (url.find('?') == std::string::npos ? "?" : "&");
  }
  url += "connect_timeout=" + value;
  return url;
}

}  // namespace litterbox::controlplane::pg
