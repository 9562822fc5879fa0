#include "controlplane/pg/connection_pool.hpp"

#include "controlplane/core/errc.hpp"

#include <pqxx/except>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <fcntl.h>
#include <libpq-fe.h>
#include <map>
#include <memory>
#include <sys/socket.h>
#include <unistd.h>
#include <utility>

namespace litterbox::controlplane::pg {

connection_pool::lease::lease(connection_pool& pool, std::unique_ptr<pqxx::connection> conn,
                              bool fresh)
    : pool_(&pool), conn_(std::move(conn)), fresh_(fresh), watch_(pool.watch(*conn_)) {}

connection_pool::lease::lease(lease&& other) noexcept
    : pool_(other.pool_),
      conn_(std::move(other.conn_)),
      fresh_(other.fresh_),
      broken_(other.broken_),
      watch_(std::exchange(other.watch_, 0)) {}

connection_pool::lease::~lease() {
  // Off the watchdog first: its descriptor must not outlive the entry.
  pool_->unwatch(watch_);
  if (conn_) {
    pool_->give_back(std::move(conn_), broken_);
  }
}

connection_pool::connection_pool(std::string url, std::size_t size,
                                 std::chrono::milliseconds acquire_timeout, on_connect setup,
                                 std::chrono::milliseconds call_timeout)
    : url_(std::move(url)),
      size_(size == 0 ? 1 : size),
      acquire_timeout_(acquire_timeout),
      setup_(std::move(setup)),
      call_timeout_(call_timeout) {
  if (call_timeout_.count() > 0) {
    watchdog_ = std::thread([this] { run_watchdog(); });
  }
}

connection_pool::~connection_pool() {
  if (watchdog_.joinable()) {
    {
      const std::lock_guard lock(watch_mutex_);
      stopping_ = true;
    }
    watch_cv_.notify_all();
    watchdog_.join();
  }
}

std::uint64_t connection_pool::watch(const pqxx::connection& conn) {
  if (call_timeout_.count() <= 0 || conn.sock() < 0) {
    return 0;
  }
  const int fd = ::fcntl(conn.sock(), F_DUPFD_CLOEXEC, 0);
  if (fd < 0) {
    return 0;
  }
  std::uint64_t id = 0;
  {
    const std::lock_guard lock(watch_mutex_);
    id = next_watch_++;
    watched_.emplace(id, watched{fd, std::chrono::steady_clock::now() + call_timeout_, false});
  }
  watch_cv_.notify_all();
  return id;
}

void connection_pool::unwatch(std::uint64_t id) {
  if (id == 0) {
    return;
  }
  int fd = -1;
  {
    const std::lock_guard lock(watch_mutex_);
    const auto it = watched_.find(id);
    if (it == watched_.end()) {
      return;
    }
    fd = it->second.fd;
    watched_.erase(it);
  }
  ::close(fd);
}

void connection_pool::run_watchdog() {
  std::unique_lock lock(watch_mutex_);
  while (!stopping_) {
    auto next = std::chrono::steady_clock::time_point::max();
    const auto now = std::chrono::steady_clock::now();
    for (auto& [id, w] : watched_) {
      if (w.fired) {
        continue;
      }
      if (w.deadline <= now) {
        // The call blocked on this socket now sees the connection end and fails.
        ::shutdown(w.fd, SHUT_RDWR);
        w.fired = true;
        spdlog::warn("database call exceeded {} ms; dropping its connection",
                     call_timeout_.count());
      } else {
        next = std::min(next, w.deadline);
      }
    }
    if (next == std::chrono::steady_clock::time_point::max()) {
      watch_cv_.wait(lock);
    } else {
      watch_cv_.wait_until(lock, next);
    }
  }
}

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

namespace {

/// A value quoted for a key=value connection string.
std::string conninfo_quote(std::string_view value) {
  std::string out = "'";
  for (const char c : value) {
    if (c == '\'' || c == '\\') {
      out.push_back('\\');
    }
    out.push_back(c);
  }
  out.push_back('\'');
  return out;
}

/// True when a backend `options` string already sets GUC `name` (`-c name=…`, `-cname=…` or
/// `--name=…`).
bool options_set(std::string_view options, std::string_view name) {
  for (std::size_t at = options.find(name); at != std::string_view::npos;
       at = options.find(name, at + 1)) {
    const bool ends = at + name.size() < options.size() && options[at + name.size()] == '=';
    const auto before = options.substr(0, at);
    const bool starts = before.ends_with("-c ") || before.ends_with("-c") ||
                        before.ends_with("--") || before.ends_with("-c\t");
    if (ends && starts) {
      return true;
    }
  }
  return false;
}

}  // namespace

result<std::string> with_session_limits(const std::string& url, const session_limits& limits) {
  char* err = nullptr;
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> parsed(
      PQconninfoParse(url.c_str(), &err), &PQconninfoFree);
  if (err != nullptr) {
    PQfreemem(err);
  }
  if (!parsed) {
    return make_error(errc::internal, "DATABASE_URL is not a valid libpq connection string");
  }
  std::vector<std::pair<std::string, std::string>> params;
  std::map<std::string, std::string, std::less<>> given;
  // Set explicitly means in the URL or in libpq's environment variable for it (PGOPTIONS,
  // PGCONNECT_TIMEOUT, …), which libpq applies only to parameters the string leaves out.
  std::map<std::string, std::string, std::less<>> from_env;
  for (const PQconninfoOption* o = parsed.get(); o->keyword != nullptr; ++o) {
    if (o->val != nullptr) {
      params.emplace_back(o->keyword, o->val);
      given.emplace(o->keyword, o->val);
    } else if (o->envvar != nullptr) {
      if (const char* v = std::getenv(o->envvar); v != nullptr && *v != '\0') {
        from_env.emplace(o->keyword, v);
      }
    }
  }
  const auto add = [&](const char* key, long long value) {
    if (value > 0 && !given.contains(key) && !from_env.contains(key)) {
      params.emplace_back(key, std::to_string(value));
    }
  };
  const auto ms = [](std::chrono::milliseconds d) { return static_cast<long long>(d.count()); };
  const auto tcp_s = std::chrono::duration_cast<std::chrono::seconds>(limits.tcp_timeout).count();
  add("connect_timeout", limits.connect_timeout.count());
  if (limits.tcp_timeout.count() > 0) {
    add("keepalives", 1);
    add("keepalives_idle", std::max<long long>(1, tcp_s / 3));
    add("keepalives_interval", std::max<long long>(1, tcp_s / 6));
    add("keepalives_count", 3);
    add("tcp_user_timeout", ms(limits.tcp_timeout));
  }
  std::string options;
  if (const auto it = given.find("options"); it != given.end()) {
    options = it->second;
  } else if (const auto env = from_env.find("options"); env != from_env.end()) {
    options = env->second;  // setting `options` below replaces PGOPTIONS: carry it over
  }
  const std::string user_options = options;
  for (const auto& [name, value] :
       {std::pair{"statement_timeout", limits.statement_timeout},
        std::pair{"lock_timeout", limits.lock_timeout},
        std::pair{"idle_in_transaction_session_timeout", limits.idle_in_transaction_timeout}}) {
    if (value.count() > 0 && !options_set(user_options, name)) {
      options += (options.empty() ? "" : " ");
      options += "-c " + std::string(name) + "=" + std::to_string(ms(value));
    }
  }
  std::string out;
  for (const auto& [key, value] : params) {
    if (key == "options") {
      continue;
    }
    out += (out.empty() ? "" : " ") + key + "=" + conninfo_quote(value);
  }
  if (!options.empty()) {
    out += (out.empty() ? "" : " ") + std::string("options=") + conninfo_quote(options);
  }
  return out;
}

}  // namespace litterbox::controlplane::pg
