#include "controlplane/http/guest_gateway.hpp"

#include "base/log.hpp"
#include "controlplane/core/proxy_store.hpp"
#include "controlplane/core/proxy_target.hpp"
#include "controlplane/http/metrics.hpp"
#include "controlplane/http/offload.hpp"
#include "controlplane/http/routes.hpp"
#include "schema/errors.hpp"
#include "schema/http_proxy.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <map>
#include <mutex>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <optional>
#include <set>
#include <sys/socket.h>
#include <thread>
#include <type_traits>
#include <unistd.h>
#include <utility>
#include <vector>

namespace litterbox::controlplane::http {
namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

constexpr auto k_as_tuple = net::as_tuple(net::use_awaitable);
// Body bytes move through one buffer of this size per direction and connection.
constexpr std::size_t k_relay_chunk = 64 * 1024;
// An answer given without reading the guest's body is followed by a half-close and reading
// (and discarding) what the guest still sends, for at most this long / this much, so that a
// guest still writing sees the answer instead of a reset.
constexpr auto k_drain_time = 5s;
constexpr std::size_t k_drain_bytes = 16 * 1024 * 1024;
// Connections over the per-host cap are answered 503; at most this many such answers are in
// progress at once, beyond that an excess connection is closed at once.
constexpr int k_max_rejections = 32;
constexpr auto k_accept_backoff_min = 50ms;
constexpr auto k_accept_backoff_max = 1s;
constexpr std::string_view k_route_label = "guest_proxy";

steady::duration to_steady(std::chrono::seconds s) {
  return std::chrono::duration_cast<steady::duration>(s);
}

/// Headers that describe one hop, never forwarded either way (RFC 9110 §7.6.1), plus those
/// the gateway sets itself (Host, framing, Expect).
bool hop_by_hop(std::string_view name) {
  static constexpr std::string_view names[] = {"connection",
                                               "keep-alive",
                                               "proxy-connection",
                                               "proxy-authenticate",
                                               "proxy-authorization",
                                               "te",
                                               "trailer",
                                               "transfer-encoding",
                                               "upgrade",
                                               "host",
                                               "content-length",
                                               "expect"};
  return std::any_of(std::begin(names), std::end(names),
                     [&](std::string_view n) { return beast::iequals(n, name); });
}

/// True if `name` is one of the tokens of the Connection header `connection` (those headers
/// are hop-by-hop too).
bool listed_in_connection(std::string_view connection, std::string_view name) {
  while (!connection.empty()) {
    const auto comma = connection.find(',');
    auto token = connection.substr(0, comma);
    connection =
        comma == std::string_view::npos ? std::string_view() : connection.substr(comma + 1);
    while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) {
      token.remove_prefix(1);
    }
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) {
      token.remove_suffix(1);
    }
    if (!token.empty() && beast::iequals(token, name)) {
      return true;
    }
  }
  return false;
}

/// Copies the end-to-end fields of `from` into `to`, leaving out those named in `skip`
/// (case-insensitively).
void copy_end_to_end(const bhttp::fields& from, bhttp::fields& to, const header_list* skip) {
  const auto connection = from[bhttp::field::connection];
  for (const auto& f : from) {
    const auto name = f.name_string();
    if (hop_by_hop(name) || listed_in_connection(connection, name)) {
      continue;
    }
    if (skip != nullptr && std::any_of(skip->begin(), skip->end(), [&](const auto& h) {
          return beast::iequals(h.first, name);
        })) {
      continue;
    }
    to.insert(name, f.value());
  }
}

/// `/<name>/<rest>?<query>` split into the proxy name and the target's request target
/// ("/<rest>?<query>"); nullopt when the request target has no valid proxy name.
std::optional<std::pair<std::string, std::string>> split_target(std::string_view target) {
  if (target.empty() || target.front() != '/') {
    return std::nullopt;
  }
  target.remove_prefix(1);
  const auto end = target.find_first_of("/?");
  const auto name = target.substr(0, end);
  if (!schema::valid_http_proxy_name(name)) {
    return std::nullopt;
  }
  std::string rest(end == std::string_view::npos ? std::string_view() : target.substr(end));
  if (rest.empty() || rest.front() == '?') {
    rest.insert(rest.begin(), '/');
  }
  return std::pair{std::string(name), std::move(rest)};
}

/// The Host header for `o`: the host (IPv6 in brackets) and the port unless the default.
std::string host_header(const schema::origin& o) {
  std::string host = o.host.find(':') != std::string::npos ? "[" + o.host + "]" : o.host;
  const int default_port = o.scheme == "https" ? 443 : 80;
  if (o.port != default_port) {
    host += ":" + std::to_string(o.port);
  }
  return host;
}

bool is_ip_literal(const std::string& host) {
  boost::system::error_code ec;
  (void)net::ip::make_address(host, ec);
  return !ec;
}

/// Half-closes `stream`, then discards what the peer still sends (bounded), so the answer
/// written before is not destroyed by a reset.
net::awaitable<void> close_gracefully(beast::tcp_stream& stream) {
  beast::error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  if (ec) {
    co_return;
  }
  stream.expires_after(to_steady(std::chrono::duration_cast<std::chrono::seconds>(k_drain_time)));
  std::vector<char> scratch(16 * 1024);
  std::size_t drained = 0;
  while (drained < k_drain_bytes) {
    auto [read_ec, n] = co_await stream.async_read_some(net::buffer(scratch), k_as_tuple);
    if (read_ec) {
      break;
    }
    drained += n;
  }
}

/// One guest connection. Lives on its own strand; everything but `close` runs on it.
struct guest_conn {
  explicit guest_conn(tcp::socket s) : guest(std::move(s)) {}
  beast::tcp_stream guest;
  beast::tcp_stream* upstream = nullptr;  ///< the target connection of the current request
  bool closed = false;

  /// Posted to the strand by remove_listener: ends every pending operation.
  void close() {
    closed = true;
    guest.close();
    if (upstream != nullptr) {
      upstream->close();
    }
  }
};

/// The listener of one host and its connections.
struct host_entry {
  host_entry(std::string id, net::strand<net::io_context::executor_type> ex)
      : host_id(std::move(id)), acceptor(ex) {}
  const std::string host_id;
  tcp::acceptor acceptor;  ///< used on its strand only
  std::mutex mutex;
  bool closed = false;                          ///< guarded by mutex
  std::set<std::shared_ptr<guest_conn>> conns;  ///< guarded by mutex
};

/// Keeps `ptr` registered as `c`'s upstream while alive.
class upstream_registration {
 public:
  upstream_registration(guest_conn& c, beast::tcp_stream& s) : c_(c) { c_.upstream = &s; }
  ~upstream_registration() { c_.upstream = nullptr; }
  upstream_registration(const upstream_registration&) = delete;
  upstream_registration& operator=(const upstream_registration&) = delete;

 private:
  guest_conn& c_;
};

/// How one request ended.
struct outcome {
  int status = 0;           ///< answered status; 0 when the exchange broke off
  bool keep_alive = false;  ///< the guest connection can carry another request
  bool drain = false;       ///< the guest's body was left unread: close gracefully
  std::string name;         ///< the proxy name asked for ("" when none)
};

}  // namespace

struct guest_gateway::impl {
  impl(const guest_gateway_options& o, proxy_store& p, const proxy_allow_list& a, metrics& m)
      : options(o),
        proxies(p),
        allow(a),
        stats(m),
        lookups(static_cast<std::size_t>(std::max(1, o.lookup_threads))),
        tls(ssl::context::tls_client) {
    tls.set_default_verify_paths();
    tls.set_verify_mode(ssl::verify_peer);
    SSL_CTX_set_min_proto_version(tls.native_handle(), TLS1_2_VERSION);
  }

  const guest_gateway_options options;
  proxy_store& proxies;
  const proxy_allow_list allow;
  metrics& stats;
  net::thread_pool lookups;
  ssl::context tls;
  std::atomic<int> rejections{0};

  mutable std::mutex mutex;
  std::map<std::string, std::shared_ptr<host_entry>, std::less<>> hosts;  ///< guarded by mutex
  std::vector<std::thread> threads;                                       ///< guarded by mutex
  bool stopped = false;                                                   ///< guarded by mutex

  // Declared last so that it is destroyed first: the coroutine frames it still holds refer
  // to the members above.
  net::io_context ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;

  void shutdown(const std::shared_ptr<host_entry>& entry);
  net::awaitable<void> accept_loop(std::shared_ptr<host_entry> entry);
  net::awaitable<void> reject(tcp::socket socket);
  net::awaitable<void> serve(std::shared_ptr<host_entry> entry, std::shared_ptr<guest_conn> c);
  net::awaitable<outcome> exchange(host_entry& entry, guest_conn& c,
                                   bhttp::request_parser<bhttp::buffer_body>& p,
                                   beast::flat_buffer& gbuf, std::vector<char>& relay);
  template <class Stream>
  net::awaitable<outcome> forward(guest_conn& c, Stream& up, beast::tcp_stream& up_tcp,
                                  bhttp::request_parser<bhttp::buffer_body>& p,
                                  beast::flat_buffer& gbuf, std::vector<char>& relay,
                                  const http_proxy_record& proxy, const schema::origin& target,
                                  const std::string& path);
  net::awaitable<outcome> answer(guest_conn& c, const bhttp::request_parser<bhttp::buffer_body>& p,
                                 unsigned status, std::string_view detail);
};

void guest_gateway::impl::shutdown(const std::shared_ptr<host_entry>& entry) {
  std::set<std::shared_ptr<guest_conn>> conns;
  {
    const std::lock_guard lock(entry->mutex);
    entry->closed = true;
    conns.swap(entry->conns);
  }
  net::post(entry->acceptor.get_executor(), [entry] {
    beast::error_code ignored;
    entry->acceptor.close(ignored);
  });
  for (const auto& c : conns) {
    net::post(c->guest.get_executor(), [c] { c->close(); });
  }
}

net::awaitable<void> guest_gateway::impl::accept_loop(std::shared_ptr<host_entry> entry) {
  auto backoff = std::chrono::milliseconds(k_accept_backoff_min);
  net::steady_timer pause(entry->acceptor.get_executor());
  for (;;) {
    auto [ec, socket] = co_await entry->acceptor.async_accept(net::make_strand(ioc), k_as_tuple);
    if (ec) {
      if (ec == net::error::operation_aborted || !entry->acceptor.is_open()) {
        co_return;
      }
      if (backoff == k_accept_backoff_min) {
        spdlog::warn("guest proxy of host {}: accept failed: {}; retrying with backoff",
                     entry->host_id, ec.message());
      }
      pause.expires_after(backoff);
      co_await pause.async_wait(k_as_tuple);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(k_accept_backoff_max));
      continue;
    }
    backoff = k_accept_backoff_min;
    auto ex = socket.get_executor();
    std::shared_ptr<guest_conn> conn;
    bool over_cap = false;
    {
      const std::lock_guard lock(entry->mutex);
      if (entry->closed) {
        co_return;  // the socket closes as it goes out of scope
      }
      if (static_cast<int>(entry->conns.size()) >= std::max(1, options.max_connections_per_host)) {
        over_cap = true;
      } else {
        conn = std::make_shared<guest_conn>(std::move(socket));
        entry->conns.insert(conn);
      }
    }
    if (over_cap) {
      if (rejections.load() >= k_max_rejections) {
        beast::error_code ignored;
        socket.close(ignored);
        continue;
      }
      spdlog::warn("guest proxy of host {}: connection limit ({}) reached", entry->host_id,
                   options.max_connections_per_host);
      ++rejections;
      net::co_spawn(ex, reject(std::move(socket)),
                    [this](const std::exception_ptr&) { --rejections; });
      continue;
    }
    net::co_spawn(ex, serve(entry, std::move(conn)), net::detached);
  }
}

net::awaitable<void> guest_gateway::impl::reject(tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  bhttp::response<bhttp::string_body> res{bhttp::status::service_unavailable, 11};
  res.set(bhttp::field::content_type, "application/json");
  res.set(bhttp::field::retry_after, "1");
  res.body() = schema::detail_body("too many connections");
  res.keep_alive(false);
  res.prepare_payload();
  stats.request_done(k_route_label, "other", 503, std::chrono::duration<double>(0));
  stream.expires_after(to_steady(std::chrono::duration_cast<std::chrono::seconds>(k_drain_time)));
  auto [ec, n] = co_await bhttp::async_write(stream, res, k_as_tuple);
  if (!ec) {
    co_await close_gracefully(stream);
  }
}

net::awaitable<void> guest_gateway::impl::serve(std::shared_ptr<host_entry> entry,
                                                std::shared_ptr<guest_conn> c) {
  // The guest buffer holds one request head at most (plus what arrived with it); bodies go
  // through `relay`.
  beast::flat_buffer gbuf(options.header_limit + k_relay_chunk);
  std::vector<char> relay(k_relay_chunk);
  bool drain = false;
  try {
    while (!c->closed) {
      bhttp::request_parser<bhttp::buffer_body> p;
      p.header_limit(static_cast<std::uint32_t>(options.header_limit));
      p.body_limit(boost::none);
      c->guest.expires_after(to_steady(options.idle_timeout));
      auto [ec, n] = co_await bhttp::async_read_header(c->guest, gbuf, p, k_as_tuple);
      if (ec) {
        const bool malformed =
            ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category() &&
            ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message;
        if (malformed && !c->closed) {
          const bool too_large = ec == bhttp::error::header_limit;
          bhttp::response<bhttp::string_body> res{
              too_large ? bhttp::status::request_header_fields_too_large
                        : bhttp::status::bad_request,
              11};
          res.set(bhttp::field::content_type, "application/json");
          res.body() = schema::detail_body("malformed HTTP request");
          res.keep_alive(false);
          res.prepare_payload();
          c->guest.expires_after(to_steady(options.idle_timeout));
          co_await bhttp::async_write(c->guest, res, k_as_tuple);
          stats.request_done(k_route_label, "other", too_large ? 431 : 400,
                             std::chrono::duration<double>(0));
          drain = true;
        }
        break;
      }
      const auto started = steady::now();
      const auto method = method_label(p.get().method_string());
      outcome o;
      try {
        o = co_await exchange(*entry, *c, p, gbuf, relay);
      } catch (const std::exception& ex) {
        spdlog::error("guest proxy of host {}: request failed: {}", entry->host_id,
                      log_escape(ex.what()));
        o = {};
      }
      const std::chrono::duration<double> latency = steady::now() - started;
      stats.request_done(k_route_label, method, o.status, latency);
      spdlog::info("guest proxy host {} {} /{}/… {} {:.1f}ms", entry->host_id, method,
                   log_escape(o.name),
                   o.status == 0 ? std::string("aborted") : std::to_string(o.status),
                   latency.count() * 1000);
      if (!o.keep_alive) {
        drain = o.drain;
        break;
      }
    }
    if (drain && !c->closed) {
      co_await close_gracefully(c->guest);
    }
  } catch (const std::exception& ex) {
    spdlog::error("guest proxy of host {}: connection failed: {}", entry->host_id,
                  log_escape(ex.what()));
  }
  beast::error_code ignored;
  c->guest.socket().close(ignored);
  const std::lock_guard lock(entry->mutex);
  entry->conns.erase(c);
}

net::awaitable<outcome> guest_gateway::impl::answer(
    guest_conn& c, const bhttp::request_parser<bhttp::buffer_body>& p, unsigned status,
    std::string_view detail) {
  outcome o;
  o.status = static_cast<int>(status);
  // A body the guest is still sending was not read: this connection cannot carry another
  // request.
  o.keep_alive = p.is_done() && p.get().keep_alive();
  o.drain = !p.is_done();
  bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(status), p.get().version()};
  res.set(bhttp::field::content_type, "application/json");
  res.body() = schema::detail_body(detail);
  res.keep_alive(o.keep_alive);
  res.prepare_payload();
  c.guest.expires_after(to_steady(options.idle_timeout));
  auto [ec, n] = co_await bhttp::async_write(c.guest, res, k_as_tuple);
  if (ec) {
    o.keep_alive = false;
    o.drain = false;
  }
  co_return o;
}

net::awaitable<outcome> guest_gateway::impl::exchange(host_entry& entry, guest_conn& c,
                                                      bhttp::request_parser<bhttp::buffer_body>& p,
                                                      beast::flat_buffer& gbuf,
                                                      std::vector<char>& relay) {
  const auto split = split_target(p.get().target());
  if (!split) {
    co_return co_await answer(c, p, 404, "http proxy not found");
  }
  const auto& [name, path] = *split;
  const std::string& host_id = entry.host_id;
  const auto lookup = [this, &host_id, &name] {
    return proxies.find_attached_proxy(host_id, name);
  };
  auto found = co_await offload(lookups, lookup);
  if (!found) {
    spdlog::warn("guest proxy of host {}: lookup failed: {}", host_id,
                 log_escape(found.error().message));
    auto o = co_await answer(c, p, 503, "http proxy lookup unavailable");
    o.name = name;
    co_return o;
  }
  if (!*found) {
    auto o = co_await answer(c, p, 404, "http proxy not found");
    o.name = name;
    co_return o;
  }
  if (c.closed) {
    co_return outcome{0, false, false, name};  // the host went while the lookup ran
  }
  const http_proxy_record& proxy = **found;
  auto target = schema::parse_origin(proxy.target);
  if (!target) {
    auto o = co_await answer(c, p, 502, "http proxy target is not a valid origin");
    o.name = name;
    co_return o;
  }
  const schema::origin& origin = *target;
  const auto resolve = [this, &origin] { return permitted_addresses(origin, allow); };
  auto addresses = co_await offload(lookups, resolve);
  if (c.closed) {
    co_return outcome{0, false, false, name};
  }
  if (!addresses || addresses->empty()) {
    const std::string detail = addresses
                                   ? std::string("http proxy target is not permitted")
                                   : "http proxy target refused: " + addresses.error().message;
    auto o = co_await answer(c, p, 502, detail);
    o.name = name;
    co_return o;
  }
  std::vector<tcp::endpoint> endpoints;
  for (const auto& a : *addresses) {
    net::ip::address_v6 v6(a);
    const auto address = v6.is_v4_mapped()
                             ? net::ip::address(net::ip::make_address_v4(net::ip::v4_mapped, v6))
                             : net::ip::address(v6);
    endpoints.emplace_back(address, static_cast<unsigned short>(origin.port));
  }

  beast::tcp_stream up(co_await net::this_coro::executor);
  const upstream_registration registered(c, up);
  up.expires_after(to_steady(options.connect_timeout));
  auto [connect_ec, endpoint] = co_await up.async_connect(endpoints, k_as_tuple);
  if (connect_ec) {
    if (c.closed) {
      co_return outcome{0, false, false, name};
    }
    const bool timeout = connect_ec == beast::error::timeout;
    const std::string detail =
        timeout ? std::string("http proxy target did not answer in time")
                : "cannot connect to the http proxy target: " + connect_ec.message();
    auto o = co_await answer(c, p, timeout ? 504 : 502, detail);
    o.name = name;
    co_return o;
  }
  if (origin.scheme != "https") {
    auto o = co_await forward(c, up, up, p, gbuf, relay, proxy, origin, path);
    o.name = name;
    co_return o;
  }
  beast::ssl_stream<beast::tcp_stream> tls_up(std::move(up), tls);
  const upstream_registration tls_registered(c, beast::get_lowest_layer(tls_up));
  SSL* handle = tls_up.native_handle();
  if (is_ip_literal(origin.host)) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(handle), origin.host.c_str());
  } else {
    // SNI (SSL_set_tlsext_host_name, spelled out: the macro is a C-style cast).
    SSL_ctrl(handle, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             const_cast<char*>(origin.host.c_str()));
    SSL_set1_host(handle, origin.host.c_str());
  }
  beast::get_lowest_layer(tls_up).expires_after(to_steady(options.connect_timeout));
  auto [handshake_ec] = co_await tls_up.async_handshake(ssl::stream_base::client, k_as_tuple);
  if (handshake_ec) {
    if (c.closed) {
      co_return outcome{0, false, false, name};
    }
    const auto verify = SSL_get_verify_result(handle);
    std::string detail;
    if (verify != X509_V_OK) {
      detail = std::string("http proxy target's TLS certificate is not trusted: ") +
               X509_verify_cert_error_string(verify);
    } else if (handshake_ec == beast::error::timeout) {
      detail = "http proxy target did not answer in time";
    } else {
      detail = "TLS handshake with the http proxy target failed";
    }
    spdlog::warn("guest proxy of host {}: {} ({})", host_id, detail, log_escape(origin.host));
    auto o = co_await answer(c, p, 502, detail);
    o.name = name;
    co_return o;
  }
  auto o = co_await forward(c, tls_up, beast::get_lowest_layer(tls_up), p, gbuf, relay, proxy,
                            origin, path);
  o.name = name;
  co_return o;
}

template <class Stream>
net::awaitable<outcome> guest_gateway::impl::forward(
    guest_conn& c, Stream& up, beast::tcp_stream& up_tcp,
    bhttp::request_parser<bhttp::buffer_body>& p, beast::flat_buffer& gbuf,
    std::vector<char>& relay, const http_proxy_record& proxy, const schema::origin& target,
    const std::string& path) {
  const auto idle = to_steady(options.idle_timeout);
  auto& in = p.get();
  const bool head = in.method() == bhttp::verb::head;

  // The request as the target sees it: the guest's end-to-end fields minus those the proxy
  // sets, then the proxy's, Host of the target, one request per target connection.
  bhttp::request<bhttp::buffer_body> out;
  out.method_string(in.method_string());
  out.target(path);
  out.version(11);
  copy_end_to_end(in.base(), out.base(), &proxy.headers);
  for (const auto& [header, value] : proxy.headers) {
    // Creation refuses framing headers already; a row that has one anyway must not be able
    // to change how the message is delimited.
    if (!hop_by_hop(header)) {
      out.set(header, value);
    }
  }
  out.set(bhttp::field::host, host_header(target));
  if (const auto length = p.content_length()) {
    out.content_length(*length);
  } else if (p.chunked()) {
    out.chunked(true);
  }
  out.keep_alive(false);

  // The gateway answers Expect: 100-continue itself (the field is not forwarded).
  if (!p.is_done() && beast::iequals(in[bhttp::field::expect], "100-continue")) {
    bhttp::response<bhttp::empty_body> cont{bhttp::status::continue_, in.version()};
    c.guest.expires_after(idle);
    auto [ec, n] = co_await bhttp::async_write(c.guest, cont, k_as_tuple);
    if (ec) {
      co_return outcome{0, false, false, {}};
    }
  }

  const auto target_failed = [&](beast::error_code ec) -> net::awaitable<outcome> {
    if (c.closed) {
      co_return outcome{0, false, false, {}};
    }
    const bool timeout = ec == beast::error::timeout;
    co_return co_await answer(c, p, timeout ? 504 : 502,
                              timeout ? "http proxy target did not answer in time"
                                      : "the http proxy target closed the connection");
  };

  // Request: head, then the body piece by piece through `relay`.
  bhttp::request_serializer<bhttp::buffer_body> sr{out};
  up_tcp.expires_after(idle);
  if (auto [ec, n] = co_await bhttp::async_write_header(up, sr, k_as_tuple); ec) {
    co_return co_await target_failed(ec);
  }
  while (!sr.is_done()) {
    if (!p.is_done()) {
      in.body().data = relay.data();
      in.body().size = relay.size();
      c.guest.expires_after(idle);
      auto [ec, n] = co_await bhttp::async_read(c.guest, gbuf, p, k_as_tuple);
      if (ec == bhttp::error::need_buffer) {
        ec = {};
      }
      if (ec) {
        co_return outcome{0, false, false, {}};  // the guest went away or stalled
      }
      out.body().data = relay.data();
      out.body().size = relay.size() - in.body().size;
      out.body().more = !p.is_done();
    } else {
      out.body().data = nullptr;
      out.body().size = 0;
      out.body().more = false;
    }
    up_tcp.expires_after(idle);
    auto [ec, n] = co_await bhttp::async_write(up, sr, k_as_tuple);
    if (ec == bhttp::error::need_buffer) {
      ec = {};
    }
    if (ec) {
      co_return co_await target_failed(ec);
    }
  }

  // Response head (interim 1xx answers are skipped: the gateway sent its own 100).
  beast::flat_buffer ubuf(options.header_limit + k_relay_chunk);
  std::optional<bhttp::response_parser<bhttp::buffer_body>> rp;
  for (;;) {
    rp.emplace();
    rp->header_limit(static_cast<std::uint32_t>(options.header_limit));
    rp->body_limit(boost::none);
    rp->skip(head);
    up_tcp.expires_after(idle);
    auto [ec, n] = co_await bhttp::async_read_header(up, ubuf, *rp, k_as_tuple);
    if (ec) {
      co_return co_await target_failed(ec);
    }
    const auto code = rp->get().result_int();
    if (code < 100 || code >= 200 || code == 101) {
      break;
    }
    // An interim response has no body; its parser is done after the head.
  }
  auto& rin = rp->get();
  if (rin.result_int() == 101) {
    co_return co_await answer(c, p, 502, "the http proxy target switched protocols");
  }

  bhttp::response<bhttp::buffer_body> res;
  res.result(rin.result_int());
  res.reason(rin.reason());
  res.version(in.version());
  copy_end_to_end(rin.base(), res.base(), nullptr);
  bool keep = in.keep_alive() && in.version() >= 11;
  const bool body_follows = !rp->is_done();
  if (const auto length = rp->content_length()) {
    res.content_length(*length);
  } else if (body_follows) {
    // Chunked or delimited by the target closing: chunked to an HTTP/1.1 guest (so the
    // connection survives), delimited by our close to an HTTP/1.0 one.
    if (in.version() >= 11) {
      res.chunked(true);
    } else {
      keep = false;
    }
  } else if (!head && rin.result_int() != 204 && rin.result_int() != 304) {
    res.content_length(0);
  }
  res.keep_alive(keep);

  bhttp::response_serializer<bhttp::buffer_body> rs{res};
  c.guest.expires_after(idle);
  if (auto [ec, n] = co_await bhttp::async_write_header(c.guest, rs, k_as_tuple); ec) {
    co_return outcome{0, false, false, {}};
  }
  outcome done{static_cast<int>(rin.result_int()), keep, false, {}};
  if (!body_follows) {
    co_return done;
  }
  while (!rs.is_done()) {
    if (!rp->is_done()) {
      rin.body().data = relay.data();
      rin.body().size = relay.size();
      up_tcp.expires_after(idle);
      auto [ec, n] = co_await bhttp::async_read(up, ubuf, *rp, k_as_tuple);
      if (ec == bhttp::error::need_buffer) {
        ec = {};
      }
      if (ec) {
        // The head is out: the only way left to tell the guest is to cut the connection.
        co_return outcome{static_cast<int>(rin.result_int()), false, false, {}};
      }
      res.body().data = relay.data();
      res.body().size = relay.size() - rin.body().size;
      res.body().more = !rp->is_done();
    } else {
      res.body().data = nullptr;
      res.body().size = 0;
      res.body().more = false;
    }
    c.guest.expires_after(idle);
    auto [ec, n] = co_await bhttp::async_write(c.guest, rs, k_as_tuple);
    if (ec == bhttp::error::need_buffer) {
      ec = {};
    }
    if (ec) {
      co_return outcome{static_cast<int>(rin.result_int()), false, false, {}};
    }
  }
  // The guest's request body was read whole above, so the connection is clean.
  co_return done;
}

guest_gateway::guest_gateway(const guest_gateway_options& options, proxy_store& proxies,
                             const proxy_allow_list& allow, metrics& stats)
    : impl_(std::make_unique<impl>(options, proxies, allow, stats)) {}

guest_gateway::~guest_gateway() {
  stop();
  impl_->lookups.join();
}

void guest_gateway::start() {
  const std::lock_guard lock(impl_->mutex);
  if (impl_->stopped || !impl_->threads.empty()) {
    return;
  }
  impl_->work.emplace(impl_->ioc.get_executor());
  for (int i = 0; i < std::max(1, impl_->options.threads); ++i) {
    impl_->threads.emplace_back([this] { impl_->ioc.run(); });
  }
}

void guest_gateway::stop() {
  std::map<std::string, std::shared_ptr<host_entry>, std::less<>> hosts;
  std::vector<std::thread> threads;
  {
    const std::lock_guard lock(impl_->mutex);
    if (impl_->stopped) {
      return;
    }
    impl_->stopped = true;
    hosts.swap(impl_->hosts);
    threads.swap(impl_->threads);
  }
  for (const auto& [id, entry] : hosts) {
    impl_->shutdown(entry);
  }
  impl_->work.reset();
  impl_->ioc.stop();
  for (auto& t : threads) {
    t.join();
  }
}

void guest_gateway::add_listener(const std::string& host_id, int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0 ||
      (address.ss_family != AF_INET && address.ss_family != AF_INET6)) {
    spdlog::error("guest proxy of host {}: the listener is not a TCP socket", host_id);
    ::close(fd);
    return;
  }
  auto entry = std::make_shared<host_entry>(host_id, net::make_strand(impl_->ioc));
  beast::error_code ec;
  entry->acceptor.assign(address.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), fd, ec);
  if (ec) {
    spdlog::error("guest proxy of host {}: cannot use the listener: {}", host_id, ec.message());
    ::close(fd);
    return;
  }
  std::shared_ptr<host_entry> previous;
  {
    const std::lock_guard lock(impl_->mutex);
    if (impl_->stopped) {
      entry->acceptor.close(ec);
      return;
    }
    auto& slot = impl_->hosts[host_id];
    previous = std::exchange(slot, entry);
  }
  if (previous) {
    impl_->shutdown(previous);
  }
  net::co_spawn(entry->acceptor.get_executor(), impl_->accept_loop(entry), net::detached);
  spdlog::debug("guest proxy of host {}: serving", host_id);
}

void guest_gateway::remove_listener(std::string_view host_id) {
  std::shared_ptr<host_entry> entry;
  {
    const std::lock_guard lock(impl_->mutex);
    const auto it = impl_->hosts.find(host_id);
    if (it == impl_->hosts.end()) {
      return;
    }
    entry = std::move(it->second);
    impl_->hosts.erase(it);
  }
  impl_->shutdown(entry);
  spdlog::debug("guest proxy of host {}: closed", entry->host_id);
}

int guest_gateway::connections(std::string_view host_id) const {
  std::shared_ptr<host_entry> entry;
  {
    const std::lock_guard lock(impl_->mutex);
    const auto it = impl_->hosts.find(host_id);
    if (it == impl_->hosts.end()) {
      return 0;
    }
    entry = it->second;
  }
  const std::lock_guard lock(entry->mutex);
  return static_cast<int>(entry->conns.size());
}

}  // namespace litterbox::controlplane::http
