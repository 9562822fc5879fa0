#include "controlplane/http/server.hpp"

#include "base/clock.hpp"
#include "base/log.hpp"
#include "base/time.hpp"
#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/core/warm_pool.hpp"
#include "controlplane/http/auth.hpp"
#include "controlplane/http/error_mapping.hpp"
#include "controlplane/http/http_proxy_handlers.hpp"
#include "controlplane/http/offload.hpp"
#include "controlplane/http/openapi.hpp"
#include "controlplane/http/routes.hpp"
#include "controlplane/http/tenant_handlers.hpp"
#include "controlplane/http/wire_profile.hpp"
#include "schema/errors.hpp"
#include "schema/host.hpp"
#include "schema/requests.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/chunk_encode.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <chrono>
#include <csignal>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace litterbox::controlplane::http {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

constexpr auto k_as_tuple = net::as_tuple(net::use_awaitable);
// Room for long tokens: an oversized Authorization header must still reach auth (401/403).
constexpr std::uint32_t k_header_limit = 64 * 1024;
constexpr std::size_t k_default_console_bytes = 64 * 1024;
constexpr std::size_t k_max_console_bytes = 16 * 1024 * 1024;
// A host settled in another process is noticed by polling at this pace.
constexpr auto k_poll_interval = 250ms;
// Safety net in case a settle notification is lost: re-read the row this often.
constexpr auto k_settle_recheck = 5s;
// A request that is answered without reading its body (413, 401, …) is closed gracefully:
// answer, half-close, then read and discard what the client still sends for at most this
// long / this many bytes, so a client that writes its whole body before reading sees the
// answer instead of a reset.
constexpr auto k_drain_time = 5s;
constexpr std::size_t k_drain_bytes = 64 * 1024 * 1024;
// Connections over LITTERBOX_MAX_CONNECTIONS get a 503; at most this many such answers are
// in progress at once, beyond that an excess connection is closed at once.
constexpr int k_max_rejections = 32;
// accept() failing (out of descriptors, ENOBUFS…) is retried after a pause growing from the
// first to the second value, instead of spinning on the error.
constexpr std::chrono::milliseconds k_accept_backoff_min = 50ms;
constexpr std::chrono::milliseconds k_accept_backoff_max = 1s;
// Event streams (API.md "Events"): a comment line at least this often keeps idle streams
// (and the proxies between) alive and finds clients that went away.
constexpr auto k_stream_keepalive = 15s;
// Events written per read: a stream far behind catches up in bounded steps.
constexpr std::size_t k_stream_batch = 256;
// A stream whose client does not take a write within this long is closed.
constexpr auto k_stream_write_timeout = 30s;

/// A wait for a host to settle ends at the create's own deadline plus this share of
/// PROVISION_TIMEOUT (between 2 s and 60 s), then answers with the host's current state.
std::chrono::seconds settle_grace(std::chrono::seconds provision_timeout) {
  return std::clamp(provision_timeout / 10, std::chrono::seconds(2), std::chrono::seconds(60));
}

const std::string k_json = "application/json";

/// What a handler answers, before it becomes a Beast response.
struct reply {
  unsigned status = 200;
  std::string body;
  std::string content_type = k_json;
  std::vector<std::pair<std::string, std::string>> headers;
  bool close = false;
  std::optional<std::string> host_id;  ///< the host a create made (for the audit log)
};

/// The parts of a request the handlers read.
struct request_view {
  std::string method;
  std::string path;
  std::string query;
  std::string body;
  std::optional<std::string> idempotency_key;
  bool respond_async = false;
  std::string request_id;
  wire_profile profile = wire_profile::litterbox;  ///< the shape the answer is rendered in
  std::optional<std::string> last_event_id;        ///< the Last-Event-ID header of an event stream
  caller who;                  ///< who the token names (an admin until authenticated)
  bool authenticated = false;  ///< the token was accepted (only those calls are audited)
};

reply json_reply(unsigned status, std::string body) {
  reply r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

reply error_reply(const error& e, std::string_view request_id) {
  auto mapped = to_http_error(e, request_id);
  reply r = json_reply(static_cast<unsigned>(mapped.status), std::move(mapped.body));
  if (mapped.retry_after) {
    r.headers.emplace_back("Retry-After", *mapped.retry_after);
  }
  return r;
}

reply internal_reply(std::string_view request_id) {
  return json_reply(500, schema::error_body("internal error", "INTERNAL", request_id));
}

std::string dump(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string render_host(const schema::host& h, wire_profile p) {
  return dump(host_json(h, p));
}

bool contains_token_ci(std::string_view haystack, std::string_view needle) {
  if (needle.size() > haystack.size()) {
    return false;
  }
  for (std::size_t i = 0; i + needle.size() <= haystack.size(); ++i) {
    bool eq = true;
    for (std::size_t j = 0; eq && j < needle.size(); ++j) {
      eq = std::tolower(static_cast<unsigned char>(haystack[i + j])) ==
           std::tolower(static_cast<unsigned char>(needle[j]));
    }
    if (eq) {
      return true;
    }
  }
  return false;
}

/// Parses "host:port" / "[v6]:port".
tcp::endpoint parse_listen(const std::string& listen) {
  std::string host;
  std::string port_text;
  if (!listen.empty() && listen.front() == '[') {
    const auto close = listen.find(']');
    if (close == std::string::npos || close + 1 >= listen.size() || listen[close + 1] != ':') {
      throw std::runtime_error("LITTERBOX_LISTEN must be host:port, got an invalid address");
    }
    host = listen.substr(1, close - 1);
    port_text = listen.substr(close + 2);
  } else {
    const auto colon = listen.rfind(':');
    if (colon == std::string::npos) {
      throw std::runtime_error("LITTERBOX_LISTEN must be host:port");
    }
    host = listen.substr(0, colon);
    port_text = listen.substr(colon + 1);
  }
  unsigned port = 0;
  const auto [end, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc{} || end != port_text.data() + port_text.size() || port > 65535) {
    throw std::runtime_error("LITTERBOX_LISTEN has an invalid port");
  }
  boost::system::error_code addr_ec;
  const auto address = net::ip::make_address(host.empty() ? "0.0.0.0" : host, addr_ec);
  if (addr_ec) {
    throw std::runtime_error("LITTERBOX_LISTEN has an invalid address: " + host);
  }
  return {address, static_cast<unsigned short>(port)};
}

/// Keeps `counter` incremented while alive; moves into the coroutine it accounts for, so the
/// count is right from the moment of accept, before that coroutine first runs.
class counted {
 public:
  explicit counted(std::atomic<int>& counter) : counter_(&counter) { ++*counter_; }
  counted(counted&& other) noexcept : counter_(std::exchange(other.counter_, nullptr)) {}
  counted(const counted&) = delete;
  counted& operator=(const counted&) = delete;
  counted& operator=(counted&&) = delete;
  ~counted() {
    if (counter_ != nullptr) {
      --*counter_;
    }
  }

 private:
  std::atomic<int>* counter_;
};

}  // namespace

struct http_server::impl {
  impl(const config& c, host_service& h, metrics& m, key_service& k, proxy_service* p)
      : cfg(c),
        hosts(h),
        stats(m),
        keys(k),
        proxies(p),
        ioc(c.http_threads > 0 ? c.http_threads : 1),
        blocking(database_threads(c)),
        hypervisor_calls(static_cast<std::size_t>(std::max(1, c.hypervisor_threads))),
        acceptor(net::make_strand(ioc)),
        openapi_litterbox(openapi_document(wire_profile::litterbox)),
        openapi_drukbox(openapi_document(wire_profile::drukbox)) {}

  ~impl() {
    ioc.stop();
    if (drainer.joinable()) {
      drainer.join();
    }
    blocking.join();
    hypervisor_calls.join();
  }

  /// Database-only work is short; one thread per core keeps it from contending with itself
  /// (measured: 16 threads over 8 connections on 2 cores tripled GET p99 and cut throughput).
  static std::size_t database_threads(const config& c) {
    if (c.blocking_threads > 0) {
      return static_cast<std::size_t>(c.blocking_threads);
    }
    return std::max<std::size_t>(2, std::thread::hardware_concurrency());
  }

  const config& cfg;
  host_service& hosts;
  metrics& stats;
  key_service& keys;
  proxy_service* proxies;  ///< null: the HTTP proxy routes are not served
  net::io_context ioc;
  net::thread_pool blocking;          ///< database-only calls: short, never wait on libvirt
  net::thread_pool hypervisor_calls;  ///< calls that may wait seconds on the hypervisor
  tcp::acceptor acceptor;
  std::optional<net::signal_set> signals;
  std::thread drainer;  ///< runs the drain of a graceful stop
  int bound_port = 0;
  system_clock clock;
  std::atomic<int> connections{0};  ///< connections being served
  std::atomic<int> rejections{0};   ///< 503 CAPACITY answers being written

  // The /openapi.json of each profile, generated once (a route table that its descriptions
  // disagree with fails here, at start-up).
  const std::string openapi_litterbox;
  const std::string openapi_drukbox;

  net::awaitable<void> accept_loop();
  net::awaitable<void> serve_connection(beast::tcp_stream stream, counted slot);
  net::awaitable<void> reject_connection(beast::tcp_stream stream, counted slot);
  net::awaitable<reply> dispatch(const route_match& m, request_view& rq);

  net::awaitable<reply> create_host(request_view& rq);
  net::awaitable<result<schema::host>> wait_settled(const std::string& id, timestamp created_at);
  net::awaitable<reply> list_hosts(request_view& rq);
  net::awaitable<reply> get_host(const std::string& id, request_view& rq);
  net::awaitable<reply> delete_host(const std::string& id, request_view& rq);
  net::awaitable<reply> renew_host(const std::string& id, request_view& rq);
  net::awaitable<reply> console(const std::string& id, request_view& rq);
  net::awaitable<reply> doctor(const request_view& rq);
  net::awaitable<reply> scrape();
  net::awaitable<reply> http_proxy(const route_match& m, request_view& rq);
  net::awaitable<reply> tenant(const route_match& m, request_view& rq);
  /// Authenticates the request (API.md "Authentication", "Tenants"): sets rq.who, or returns
  /// the refusal (401, 403, 429, 503) to answer instead.
  net::awaitable<std::optional<reply>> authenticate(const bhttp::request<bhttp::string_body>& req,
                                                    const route_match* m, request_view& rq);
  /// Serves an event stream on `stream` until the client goes or the server stops; an
  /// answer instead of a stream (bad query, 404, 410, 503) is returned for the caller to
  /// write.
  net::awaitable<std::optional<reply>> stream_events(beast::tcp_stream& stream,
                                                     const route_match& m, request_view& rq,
                                                     unsigned version);
};

namespace {

/// Answers, half-closes and then discards what the peer still sends until it closes, for at
/// most k_drain_time / k_drain_bytes: closing a socket with unread data makes the kernel send
/// a reset, which destroys the answer before a client that is still writing reads it.
net::awaitable<void> close_gracefully(beast::tcp_stream& stream) {
  beast::error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  if (ec) {
    co_return;
  }
  stream.expires_after(
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(k_drain_time));
  std::vector<char> scratch(64 * 1024);
  std::size_t drained = 0;
  while (drained < k_drain_bytes) {
    auto [read_ec, n] = co_await stream.async_read_some(net::buffer(scratch), k_as_tuple);
    if (read_ec) {
      break;
    }
    drained += n;
  }
}

}  // namespace

net::awaitable<void> http_server::impl::accept_loop() {
  auto backoff = k_accept_backoff_min;
  net::steady_timer pause(acceptor.get_executor());
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(net::make_strand(ioc), k_as_tuple);
    if (ec) {
      if (ec == net::error::operation_aborted || !acceptor.is_open()) {
        co_return;
      }
      // Out of descriptors and similar: the error repeats until something is released, so
      // wait instead of spinning; pending connections stay queued in the listen backlog.
      if (backoff == k_accept_backoff_min) {
        spdlog::warn("accept failed: {}; retrying with backoff", ec.message());
      }
      pause.expires_after(backoff);
      co_await pause.async_wait(k_as_tuple);
      backoff = std::min(backoff * 2, k_accept_backoff_max);
      continue;
    }
    if (backoff != k_accept_backoff_min) {
      spdlog::info("accepting connections again");
      backoff = k_accept_backoff_min;
    }
    auto ex = socket.get_executor();
    if (connections.load() >= std::max(1, cfg.max_connections)) {
      if (rejections.load() >= k_max_rejections) {
        beast::error_code ignored;
        socket.close(ignored);
        continue;
      }
      net::co_spawn(ex,
                    reject_connection(beast::tcp_stream(std::move(socket)), counted(rejections)),
                    net::detached);
      continue;
    }
    net::co_spawn(ex, serve_connection(beast::tcp_stream(std::move(socket)), counted(connections)),
                  net::detached);
  }
}

net::awaitable<void> http_server::impl::reject_connection(beast::tcp_stream stream,
                                                          counted /*slot*/) {
  bhttp::response<bhttp::string_body> res{bhttp::status::service_unavailable, 11};
  res.set(bhttp::field::content_type, k_json);
  res.set("X-Request-Id", new_uuid_v7(clock.now()));
  res.set(bhttp::field::retry_after, "1");
  res.body() = schema::error_body("too many connections", "CAPACITY");
  res.keep_alive(false);
  res.prepare_payload();
  stats.request_done("unmatched", "other", 503, std::chrono::duration<double>(0));
  stream.expires_after(
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(k_drain_time));
  auto [write_ec, written] = co_await bhttp::async_write(stream, res, k_as_tuple);
  if (!write_ec) {
    co_await close_gracefully(stream);
  }
}

net::awaitable<void> http_server::impl::serve_connection(beast::tcp_stream stream,
                                                         counted /*slot*/) {
  beast::flat_buffer buffer;
  // Set when an answer leaves part of the request unread: the close must then drain.
  bool unread_request = false;
  const auto idle =
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(cfg.http_idle_timeout);
  for (;;) {
    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(k_header_limit);
    // The body limit is applied only after auth: a request without a token is a 401 however
    // large its body claims to be.
    parser.body_limit(boost::none);
    stream.expires_after(idle);
    auto [read_ec, header_bytes] =
        co_await bhttp::async_read_header(stream, buffer, parser, k_as_tuple);
    if (read_ec) {
      const bool malformed =
          read_ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category() &&
          read_ec != bhttp::error::end_of_stream && read_ec != bhttp::error::partial_message;
      if (malformed) {
        bhttp::response<bhttp::string_body> res{read_ec == bhttp::error::header_limit
                                                    ? bhttp::status::request_header_fields_too_large
                                                    : bhttp::status::bad_request,
                                                11};
        res.set(bhttp::field::content_type, k_json);
        res.set("X-Request-Id", new_uuid_v7(clock.now()));
        res.body() = schema::error_body("malformed HTTP request", "BAD_REQUEST");
        res.keep_alive(false);
        res.prepare_payload();
        stream.expires_after(idle);
        co_await bhttp::async_write(stream, res, k_as_tuple);
        // Whatever followed the bad head is unread: drain it so the 400/431 is not reset away.
        unread_request = true;
      }
      break;
    }

    const auto started = std::chrono::steady_clock::now();
    auto& req = parser.get();
    request_view rq;
    rq.request_id = new_uuid_v7(clock.now());
    rq.method = std::string(req.method_string());
    const std::string_view target = req.target();
    const auto question = target.find('?');
    rq.path = std::string(target.substr(0, question));
    if (question != std::string_view::npos) {
      rq.query = std::string(target.substr(question + 1));
    }

    reply rep;
    std::string route_label = "unmatched";
    bool failed = false;
    std::optional<route_match> m_for_audit;
    try {
      const auto m = match_route(rq.path);
      m_for_audit = m;
      if (m) {
        route_label = http::route_label(*m);
        rq.profile = m->profile;
      }
      const bool needs_auth = !m || m->matched->needs_auth;
      std::optional<reply> early;
      if (needs_auth) {
        early = co_await authenticate(req, m ? &*m : nullptr, rq);
      }
      if (!early && !m) {
        early = json_reply(404, schema::error_body("Not Found", "NOT_FOUND"));
      }
      if (!early && !allows(*m->matched, rq.method, m->profile)) {
        early = json_reply(405, schema::detail_body("Method Not Allowed"));
        early->headers.emplace_back("Allow", allow_header(*m->matched, m->profile));
      }
      const auto length = parser.content_length();
      if (!early && length && *length > cfg.max_body_bytes) {
        early = json_reply(413, schema::error_body("request body too large", "TOO_LARGE"));
      }
      if (early) {
        rep = std::move(*early);
        // The body (if any) was not read, so the connection cannot carry another request.
        rep.close = !parser.is_done();
        unread_request = rep.close;
      }
      if (!early && !parser.is_done()) {
        parser.body_limit(cfg.max_body_bytes);
        if (beast::iequals(req[bhttp::field::expect], "100-continue")) {
          bhttp::response<bhttp::empty_body> cont{bhttp::status::continue_, req.version()};
          stream.expires_after(idle);
          co_await bhttp::async_write(stream, cont, k_as_tuple);
        }
        stream.expires_after(idle);
        auto [body_ec, body_bytes] = co_await bhttp::async_read(stream, buffer, parser, k_as_tuple);
        if (body_ec == bhttp::error::body_limit) {
          rep = json_reply(413, schema::error_body("request body too large", "TOO_LARGE"));
          rep.close = true;
          unread_request = true;
          early = rep;
        } else if (body_ec) {
          // Truncated or stalled body: nothing sensible to answer.
          break;
        }
      }
      if (!early) {
        rq.body = std::move(req.body());
        if (const auto key = req.find("Idempotency-Key"); key != req.end()) {
          rq.idempotency_key = std::string(key->value());
        }
        for (const auto& field : req) {
          if (beast::iequals(field.name_string(), "Prefer") &&
              contains_token_ci(field.value(), "respond-async")) {
            rq.respond_async = true;
          }
        }
        if (m->matched->id == route_id::events || m->matched->id == route_id::host_events) {
          if (const auto last = req.find("Last-Event-ID"); last != req.end()) {
            rq.last_event_id = std::string(last->value());
          }
          auto answer = co_await stream_events(stream, *m, rq, req.version());
          if (!answer) {
            // The stream ran; its end ends the connection.
            stats.request_done(route_label, method_label(rq.method), 200,
                               std::chrono::steady_clock::now() - started);
            spdlog::info("{} {} {} stream ended", rq.request_id, log_escape(rq.method),
                         log_escape(rq.path));
            beast::error_code ignored;
            stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
            co_return;
          }
          rep = std::move(*answer);
        } else {
          rep = co_await dispatch(*m, rq);
        }
      }
    } catch (const std::exception& ex) {
      spdlog::error("request {} {} {} failed: {}", rq.request_id, log_escape(rq.method),
                    route_label, log_escape(ex.what()));
      failed = true;
    } catch (...) {
      spdlog::error("request {} {} {} failed", rq.request_id, log_escape(rq.method), route_label);
      failed = true;
    }
    if (failed) {
      rep = internal_reply(rq.request_id);
    }
    if (const auto action = rq.authenticated && m_for_audit
                                ? audit_action(m_for_audit->matched->id, rq.method)
                                : std::nullopt) {
      audit_entry entry;
      entry.key_id = rq.who.key_id;
      entry.ns = rq.who.scope();
      entry.action = std::string(*action);
      if (!m_for_audit->host_id.empty()) {
        entry.host_id = m_for_audit->host_id;
      } else if (rep.host_id) {
        entry.host_id = rep.host_id;
      }
      entry.request_id = rq.request_id;
      entry.status = static_cast<int>(rep.status);
      // Recorded before the answer is written: a caller that has its answer finds its entry.
      co_await offload(blocking, [this, &entry] {
        keys.audit(entry);
        return true;
      });
    }

    bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(rep.status), req.version()};
    res.set("X-Request-Id", rq.request_id);
    if (rep.status != 204) {
      res.set(bhttp::field::content_type, rep.content_type);
      res.body() = std::move(rep.body);
    }
    for (auto& [name, value] : rep.headers) {
      res.set(name, value);
    }
    res.keep_alive(req.keep_alive() && !rep.close);
    res.prepare_payload();
    if (rep.status == 204) {
      // RFC 9110 §8.6: no Content-Length on a 204.
      res.erase(bhttp::field::content_length);
    }

    const auto latency = std::chrono::steady_clock::now() - started;
    stats.request_done(route_label, method_label(rq.method), static_cast<int>(rep.status), latency);
    spdlog::info("{} {} {} {} {:.1f}ms", rq.request_id, log_escape(rq.method), log_escape(rq.path),
                 rep.status, std::chrono::duration<double, std::milli>(latency).count());

    stream.expires_after(idle);
    auto [write_ec, written] = co_await bhttp::async_write(stream, res, k_as_tuple);
    if (write_ec) {
      co_return;
    }
    if (!res.keep_alive()) {
      break;
    }
  }
  if (unread_request) {
    co_await close_gracefully(stream);
    co_return;
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

namespace {

/// One event as an SSE message: `id:` and one `data:` line (API.md "Events").
void append_event(std::string& out, const host_event& e) {
  nlohmann::ordered_json j;
  j["id"] = e.id;
  j["at"] = format_rfc3339(e.at);
  j["host_id"] = e.host_id;
  j["type"] = std::string(to_string(e.type));
  j["status"] = std::string(schema::to_string(e.status));
  j["last_error"] = e.last_error;
  out += "id: " + std::to_string(e.id) + "\ndata: " + dump(j) + "\n\n";
}

reply query_issue(std::vector<std::string> loc, std::string msg, std::string_view request_id) {
  error e = make_error(errc::validation, "validation failed");
  e.issues.push_back(field_issue{std::move(loc), std::move(msg), "value_error"});
  auto mapped = to_http_error(e, request_id);
  // to_http_error names the body for validation errors; these are the query's or headers'.
  mapped.body = schema::validation_body(e.issues);
  return json_reply(static_cast<unsigned>(mapped.status), std::move(mapped.body));
}

}  // namespace

net::awaitable<std::optional<reply>> http_server::impl::stream_events(beast::tcp_stream& stream,
                                                                      const route_match& m,
                                                                      request_view& rq,
                                                                      unsigned version) {
  event_query q;
  q.limit = k_stream_batch;
  std::optional<std::string> after_text = rq.last_event_id;
  bool header_resume = after_text.has_value();
  for (auto& [name, value] : parse_query(rq.query)) {
    if (name == "status") {
      const auto s = schema::parse_host_status(value);
      if (!s) {
        co_return query_issue({"query", "status"}, "unknown status", rq.request_id);
      }
      q.statuses.push_back(*s);
    } else if (name == "host_id" && m.matched->id == route_id::events) {
      q.host_id = value;
    } else if (name == "after" && !header_resume) {
      after_text = value;  // the header, which EventSource sends on reconnect, wins
    }
  }
  if (m.matched->id == route_id::host_events) {
    q.host_id = m.host_id;
  }
  // A scoped key's stream shows its own namespace's hosts only.
  q.ns = rq.who.scope();
  auto& hub = hosts.events();
  if (after_text) {
    const auto after = parse_non_negative(*after_text);
    if (!after) {
      co_return query_issue(header_resume ? std::vector<std::string>{"header", "Last-Event-ID"}
                                          : std::vector<std::string>{"query", "after"},
                            "not an event id", rq.request_id);
    }
    q.after = *after;
  } else {
    auto newest = co_await offload(blocking, [&hub] { return hub.newest(); });
    if (!newest) {
      co_return error_reply(newest.error(), rq.request_id);
    }
    q.after = *newest;
  }
  if (m.matched->id == route_id::host_events) {
    // 404 only for a host that never existed: a deleted one still has its history.
    auto known = co_await offload(blocking, [this, &m, &hub, &rq]() -> result<bool> {
      auto h = hosts.get(m.host_id, rq.who);
      if (h) {
        return true;
      }
      if (h.error().code != errc::not_found) {
        return h.error();
      }
      event_query any;
      any.host_id = m.host_id;
      any.ns = rq.who.scope();
      any.limit = 1;
      auto seen = hub.read(any);
      return seen && !seen->empty();
    });
    if (!known) {
      co_return error_reply(known.error(), rq.request_id);
    }
    if (!*known) {
      co_return json_reply(404, schema::error_body("host not found", "NOT_FOUND"));
    }
  }
  // Subscribed before the first read: a change committed in between still wakes the stream.
  auto ex = co_await net::this_coro::executor;
  struct wake_state {
    explicit wake_state(const net::any_io_executor& e) : timer(e) {}
    net::steady_timer timer;
    bool pending = false;
  };
  auto w = std::make_shared<wake_state>(ex);
  const auto subscription = hub.subscribe([w, ex] {
    // Runs on the hub's thread: hand the wake-up to the connection's strand.
    net::post(ex, [w] {
      w->pending = true;
      w->timer.cancel();
    });
  });
  struct unsubscribe_at_end {
    event_hub& hub;
    std::uint64_t id;
    ~unsubscribe_at_end() { hub.unsubscribe(id); }
  } guard{hub, subscription};
  auto batch = co_await offload(blocking, [&hub, &q] { return hub.read(q); });
  if (!batch) {
    co_return error_reply(batch.error(), rq.request_id);
  }

  // From here on the answer is the stream.
  bhttp::response<bhttp::empty_body> head{bhttp::status::ok, version};
  head.set(bhttp::field::content_type, "text/event-stream");
  head.set(bhttp::field::cache_control, "no-cache");
  head.set("X-Request-Id", rq.request_id);
  head.keep_alive(false);
  head.chunked(true);
  bhttp::response_serializer<bhttp::empty_body> sr{head};
  stream.expires_after(k_stream_write_timeout);
  if (auto [ec, n] = co_await bhttp::async_write_header(stream, sr, k_as_tuple); ec) {
    co_return std::nullopt;
  }
  const auto write_chunk = [&stream](const std::string& text) -> net::awaitable<bool> {
    stream.expires_after(k_stream_write_timeout);
    auto [ec, n] =
        co_await net::async_write(stream, bhttp::make_chunk(net::buffer(text)), k_as_tuple);
    co_return !ec;
  };
  // A first message: the client knows the stream is open even when nothing happens, and
  // its id (no data: no event) is where a reconnect resumes if no event came yet.
  if (!co_await write_chunk(": stream open\nid: " + std::to_string(q.after) + "\n\n")) {
    co_return std::nullopt;
  }
  for (;;) {
    if (batch && !batch->empty()) {
      std::string text;
      for (const auto& e : *batch) {
        append_event(text, e);
      }
      q.after = batch->back().id;
      if (!co_await write_chunk(text)) {
        co_return std::nullopt;
      }
    } else if (!batch && batch.error().code == errc::history_gone) {
      // Pruned past this stream's position while it lagged: say so rather than skip.
      (void)co_await write_chunk(
          "event: error\ndata: {\"detail\": \"event history no longer available\"}\n\n");
      co_return std::nullopt;
    }
    const bool full = batch && batch->size() == k_stream_batch;
    if (!full && !w->pending) {
      w->timer.expires_after(k_stream_keepalive);
      co_await w->timer.async_wait(k_as_tuple);
      if (!w->pending) {
        if (!co_await write_chunk(": keep-alive\n\n")) {
          co_return std::nullopt;
        }
      }
    }
    w->pending = false;
    // A database outage is not the end of the stream: the next wake-up or keep-alive retries.
    batch = co_await offload(blocking, [&hub, &q] { return hub.read(q); });
  }
}

net::awaitable<reply> http_server::impl::dispatch(const route_match& m, request_view& rq) {
  switch (m.matched->id) {
    case route_id::hosts:
      if (rq.method == "POST") {
        co_return co_await create_host(rq);
      }
      co_return co_await list_hosts(rq);
    case route_id::host:
      if (rq.method == "DELETE") {
        co_return co_await delete_host(m.host_id, rq);
      }
      co_return co_await get_host(m.host_id, rq);
    case route_id::host_renew:
      co_return co_await renew_host(m.host_id, rq);
    case route_id::host_console:
      co_return co_await console(m.host_id, rq);
    case route_id::healthz:
      co_return json_reply(200, R"({"status":"ok"})");
    case route_id::doctor:
      co_return co_await doctor(rq);
    case route_id::metrics:
      co_return co_await scrape();
    case route_id::openapi:
      co_return json_reply(
          200, m.profile == wire_profile::drukbox ? openapi_drukbox : openapi_litterbox);
    case route_id::http_proxies:
    case route_id::http_proxy:
    case route_id::http_proxy_host:
      co_return co_await http_proxy(m, rq);
    case route_id::keys:
    case route_id::key:
    case route_id::audit:
      co_return co_await tenant(m, rq);
    case route_id::events:
    case route_id::host_events:
      break;  // streams are served by stream_events, never dispatched
  }
  co_return internal_reply(rq.request_id);
}

net::awaitable<reply> http_server::impl::http_proxy(const route_match& m, request_view& rq) {
  if (proxies == nullptr) {
    co_return json_reply(404, schema::error_body("Not Found", "NOT_FOUND"));
  }
  auto answered = co_await offload(blocking, [this, &m, &rq] {
    return handle_http_proxy(*proxies, m, rq.method, rq.body, rq.who.ns);
  });
  if (!answered) {
    co_return error_reply(answered.error(), rq.request_id);
  }
  co_return json_reply(answered->status, std::move(answered->body));
}

net::awaitable<reply> http_server::impl::tenant(const route_match& m, request_view& rq) {
  auto answered = co_await offload(
      blocking, [this, &m, &rq] { return handle_tenant(keys, m, rq.method, rq.body, rq.query); });
  if (!answered) {
    co_return error_reply(answered.error(), rq.request_id);
  }
  reply r = json_reply(answered->status, std::move(answered->body));
  if (answered->status == 201) {
    // The one answer that carries a key: no cache may keep it.
    r.headers.emplace_back("Cache-Control", "no-store");
  }
  co_return r;
}

net::awaitable<std::optional<reply>> http_server::impl::authenticate(
    const bhttp::request<bhttp::string_body>& req, const route_match* m, request_view& rq) {
  const auto auth_it = req.find(bhttp::field::authorization);
  const auto token =
      auth_it == req.end() ? std::nullopt : bearer_token(std::string_view(auth_it->value()));
  if (!token) {
    co_return json_reply(401, schema::detail_body("service token required"));
  }
  auto answer = keys.check_cached(*token);
  if (answer.kind == auth_kind::unknown) {
    // A scoped key the cache cannot vouch for: the database decides.
    const std::string_view t = *token;
    auto checked = co_await offload(blocking, [this, &t] { return keys.check(t); });
    if (!checked) {
      co_return error_reply(checked.error(), rq.request_id);
    }
    answer = std::move(*checked);
  }
  if (answer.kind != auth_kind::admin && answer.kind != auth_kind::scoped) {
    co_return json_reply(403, schema::detail_body("service token rejected"));
  }
  rq.who = std::move(answer.who);
  rq.authenticated = true;
  if (m != nullptr && m->matched->admin_only && !rq.who.admin) {
    co_return json_reply(403, schema::detail_body("admin token required"));
  }
  if (const auto wait = keys.throttle(rq.who)) {
    reply r = json_reply(429, schema::error_body("rate limit exceeded for this key", "QUOTA"));
    r.headers.emplace_back("Retry-After", std::to_string(wait->count()));
    co_return r;
  }
  co_return std::nullopt;
}

net::awaitable<reply> http_server::impl::create_host(request_view& rq) {
  // Every host this answers with is in the shape of the profile the request came in on.
  const auto host_body = [&rq](const schema::host& h) { return render_host(h, rq.profile); };
  auto parsed = schema::parse_create_host_request(rq.body);
  if (!parsed) {
    co_return error_reply(parsed.error(), rq.request_id);
  }
  auto created = co_await offload(
      blocking, [this, &parsed, &rq] { return hosts.create(*parsed, rq.idempotency_key, rq.who); });
  if (!created) {
    co_return error_reply(created.error(), rq.request_id);
  }
  // Whatever the answer below, the audit log names the host this call made or replayed.
  const auto with_host = [&created](reply r) {
    r.host_id = created->host.id;
    return r;
  };
  if (rq.respond_async) {
    // The creating request is the only one that ever sees the minted key, async or not.
    co_return with_host(json_reply(202, host_body(created->host)));
  }
  auto settled = co_await wait_settled(created->host.id, created->host.created_at);
  if (!settled) {
    co_return with_host(error_reply(settled.error(), rq.request_id));
  }
  auto& h = *settled;
  if (schema::is_provisioning(h.status)) {
    // Past the create's own deadline and still not settled (its owner is stuck or gone):
    // the host as it is now, as a respond-async create would have answered; the caller
    // polls GET /hosts/{id}. The creating request still hands out the minted key.
    if (created->created) {
      h.private_key = created->host.private_key;
    }
    co_return with_host(json_reply(202, host_body(h)));
  }
  if (h.status == schema::host_status::error) {
    co_return with_host(
        error_reply(make_error(errc::provisioning_failed, h.last_error), rq.request_id));
  }
  if (h.status != schema::host_status::active) {
    co_return with_host(
        error_reply(make_error(errc::host_state, "the host is being deleted"), rq.request_id));
  }
  if (created->created) {
    h.private_key = created->host.private_key;
  }
  // API.md "How a create was served": a replay says how the original was served. A claim
  // knows at once; a clone or a boot is the provisioner's choice, kept in the row.
  auto path = created->path;
  if (!path) {
    auto served = co_await offload(blocking, [this, &h] { return hosts.served_by(h.id); });
    path = served ? *served : controlplane::create_path::boot;
  }
  reply r = json_reply(201, host_body(h));
  r.headers.emplace_back("X-Litterbox-Create-Path", std::string(controlplane::to_string(*path)));
  if (created->created) {
    stats.create_served(controlplane::to_string(*path));
  }
  co_return with_host(std::move(r));
}

net::awaitable<result<schema::host>> http_server::impl::wait_settled(const std::string& id,
                                                                     timestamp created_at) {
  auto ex = co_await net::this_coro::executor;
  // The create's own deadline plus a grace, on the steady clock; after it the host is
  // answered as it is (a wait must never outlive an owner that is stuck or gone).
  const auto wall_left =
      created_at + cfg.provision_timeout + settle_grace(cfg.provision_timeout) - clock.now();
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                            std::max<std::chrono::microseconds>(
                                std::chrono::duration_cast<std::chrono::microseconds>(wall_left),
                                std::chrono::microseconds(0)));
  const auto until_deadline = [&deadline](std::chrono::steady_clock::duration step) {
    return std::min(step, std::max<std::chrono::steady_clock::duration>(
                              deadline - std::chrono::steady_clock::now(),
                              std::chrono::steady_clock::duration::zero()));
  };
  struct waiter {
    explicit waiter(const net::any_io_executor& e) : timer(e) {}
    net::steady_timer timer;
    bool settled = false;
  };
  auto w = std::make_shared<waiter>(ex);
  const auto subscribe = [this, &id, w, ex] {
    return hosts.notify_when_settled(id, [w, ex] {
      // Runs on a service thread: hand the wake-up to the connection's strand.
      net::post(ex, [w] {
        w->settled = true;
        w->timer.cancel();
      });
    });
  };
  const bool notified = co_await offload(blocking, subscribe);
  const auto get = [this, &id] { return hosts.get(id); };
  if (notified) {
    while (!w->settled) {
      w->timer.expires_after(until_deadline(k_settle_recheck));
      co_await w->timer.async_wait(k_as_tuple);
      if (!w->settled) {
        auto h = co_await offload(blocking, get);
        if (!h || !schema::is_provisioning(h->status) ||
            std::chrono::steady_clock::now() >= deadline) {
          co_return h;
        }
      }
    }
    co_return co_await offload(blocking, get);
  }
  // Another process drives this host (or it has already settled): poll the row.
  for (;;) {
    auto h = co_await offload(blocking, get);
    if (!h || !schema::is_provisioning(h->status) || std::chrono::steady_clock::now() >= deadline) {
      co_return h;
    }
    w->timer.expires_after(until_deadline(k_poll_interval));
    co_await w->timer.async_wait(k_as_tuple);
  }
}

net::awaitable<reply> http_server::impl::list_hosts(request_view& rq) {
  list_params params;
  std::vector<std::string> statuses;
  for (auto& [name, value] : parse_query(rq.query)) {
    if (name == "status") {
      statuses.push_back(std::move(value));
    } else if (name == "limit") {
      params.limit = std::move(value);
    } else if (name == "after") {
      params.after = std::move(value);
    }
  }
  params.statuses = status_filter(statuses, rq.profile);
  auto page =
      co_await offload(blocking, [this, &params, &rq] { return hosts.list(params, rq.who); });
  if (!page) {
    co_return error_reply(page.error(), rq.request_id);
  }
  auto list = nlohmann::ordered_json::array();
  for (const auto& h : page->hosts) {
    list.push_back(host_json(h, rq.profile));
  }
  reply r = json_reply(200, dump(list));
  if (page->next_after) {
    // The next page in the caller's profile, with the filter as the caller wrote it.
    std::string next = std::string(path_prefix(rq.profile)) + "/hosts?";
    for (const auto& s : statuses) {
      next += "status=" + percent_encode(s) + "&";
    }
    if (params.limit) {
      next += "limit=" + percent_encode(*params.limit) + "&";
    }
    next += "after=" + percent_encode(*page->next_after);
    r.headers.emplace_back("Link", "<" + next + ">; rel=\"next\"");
  }
  co_return r;
}

net::awaitable<reply> http_server::impl::get_host(const std::string& id, request_view& rq) {
  auto h = co_await offload(blocking, [this, &id, &rq] { return hosts.get(id, rq.who); });
  if (!h) {
    co_return error_reply(h.error(), rq.request_id);
  }
  co_return json_reply(200, render_host(*h, rq.profile));
}

net::awaitable<reply> http_server::impl::delete_host(const std::string& id, request_view& rq) {
  auto done =
      co_await offload(hypervisor_calls, [this, &id, &rq] { return hosts.remove(id, rq.who); });
  if (!done) {
    co_return error_reply(done.error(), rq.request_id);
  }
  co_return json_reply(204, {});
}

net::awaitable<reply> http_server::impl::renew_host(const std::string& id, request_view& rq) {
  auto parsed = schema::parse_renew_request(rq.body);
  if (!parsed) {
    co_return error_reply(parsed.error(), rq.request_id);
  }
  auto h = co_await offload(blocking,
                            [this, &id, &parsed, &rq] { return hosts.renew(id, *parsed, rq.who); });
  if (!h) {
    co_return error_reply(h.error(), rq.request_id);
  }
  co_return json_reply(200, render_host(*h, rq.profile));
}

net::awaitable<reply> http_server::impl::console(const std::string& id, request_view& rq) {
  std::size_t bytes = k_default_console_bytes;
  for (const auto& [name, value] : parse_query(rq.query)) {
    if (name != "bytes") {
      continue;
    }
    std::size_t n = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
    if (ec != std::errc{} || end != value.data() + value.size() || n == 0 ||
        n > k_max_console_bytes) {
      error e = make_error(errc::validation, "invalid bytes");
      e.issues.push_back(field_issue{
          {"query", "bytes"},
          "Input should be an integer between 1 and " + std::to_string(k_max_console_bytes),
          "int_parsing"});
      co_return error_reply(e, rq.request_id);
    }
    bytes = n;
  }
  auto text = co_await offload(
      hypervisor_calls, [this, &id, bytes, &rq] { return hosts.console(id, bytes, rq.who); });
  if (!text) {
    co_return error_reply(text.error(), rq.request_id);
  }
  reply r = json_reply(200, std::move(*text));
  r.content_type = "text/plain; charset=utf-8";
  co_return r;
}

net::awaitable<reply> http_server::impl::doctor(const request_view& rq) {
  auto report = co_await offload(hypervisor_calls, [this] { return hosts.doctor(); });
  co_return json_reply(200, doctor_body(report, rq.profile));
}

net::awaitable<reply> http_server::impl::scrape() {
  auto counts = co_await offload(blocking, [this] { return hosts.count_by_status(); });
  // With the database down the gauge keeps its last values; the scrape itself still works.
  if (counts) {
    stats.set_hosts_by_status(*counts);
  }
  auto pools = co_await offload(blocking, [this] { return hosts.pool_states(); });
  std::vector<metrics::pool_gauge> gauges;
  for (const auto& p : pools) {
    gauges.push_back(
        {p.spec.image, p.spec.cpus, p.spec.memory_mib, p.spec.size, p.ready, p.filling});
  }
  stats.set_pools(gauges);
  auto templates = co_await offload(blocking, [this] { return hosts.count_templates(); });
  if (templates) {
    std::map<std::string, std::int64_t> by_status;
    for (const auto& [status, n] : *templates) {
      by_status.emplace(controlplane::to_string(status), n);
    }
    stats.set_templates(by_status);
  }
  reply r = json_reply(200, stats.scrape());
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  co_return r;
}

http_server::http_server(const config& cfg, host_service& hosts, metrics& stats, key_service& keys,
                         proxy_service* proxies)
    : impl_(std::make_unique<impl>(cfg, hosts, stats, keys, proxies)) {}

http_server::~http_server() = default;

void http_server::start() {
  const auto endpoint = parse_listen(impl_->cfg.listen);
  auto& acceptor = impl_->acceptor;
  beast::error_code ec;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) {
    acceptor.set_option(net::socket_base::reuse_address(true), ec);
  }
  if (!ec) {
    acceptor.bind(endpoint, ec);
  }
  if (!ec) {
    acceptor.listen(net::socket_base::max_listen_connections, ec);
  }
  if (ec) {
    throw std::runtime_error("cannot listen on " + impl_->cfg.listen + ": " + ec.message());
  }
  impl_->bound_port = acceptor.local_endpoint().port();
  net::co_spawn(acceptor.get_executor(), impl_->accept_loop(), net::detached);
}

int http_server::port() const {
  return impl_->bound_port;
}

void http_server::stop_on_signals(std::function<void()> drain) {
  impl_->signals.emplace(impl_->ioc, SIGINT, SIGTERM);
  impl_->signals->async_wait(
      [this, drain = std::move(drain)](const beast::error_code& ec, int signal) {
        if (ec) {
          return;
        }
        beast::error_code ignored;
        impl_->acceptor.close(ignored);
        if (!drain) {
          spdlog::info("signal {} received, stopping", signal);
          stop();
          return;
        }
        spdlog::info("signal {} received: no new connections, draining (again to stop at once)",
                     signal);
        impl_->signals->async_wait([this](const beast::error_code& again, int) {
          if (!again) {
            stop();
          }
        });
        impl_->drainer = std::thread([this, drain] {
          drain();
          // The answers of the waiters the drain woke are written by the I/O threads: give them
          // a moment to reach their sockets before the I/O context stops.
          auto flush = std::make_shared<net::steady_timer>(impl_->ioc, std::chrono::seconds(1));
          flush->async_wait([this, flush](const beast::error_code&) { stop(); });
        });
      });
}

void http_server::run() {
  const int extra = impl_->cfg.http_threads > 1 ? impl_->cfg.http_threads - 1 : 0;
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(extra));
  for (int i = 0; i < extra; ++i) {
    threads.emplace_back([this] { impl_->ioc.run(); });
  }
  impl_->ioc.run();
  for (auto& t : threads) {
    t.join();
  }
  if (impl_->drainer.joinable()) {
    impl_->drainer.join();
  }
}

void http_server::stop() {
  // Nothing runs the I/O context afterwards, so nothing more is accepted or answered.
  impl_->ioc.stop();
}

}  // namespace litterbox::controlplane::http
