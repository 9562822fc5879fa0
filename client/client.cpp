#include "client/client.hpp"

#include "base/time.hpp"
#include "base/uuid.hpp"
#include "client/errc.hpp"
#include "schema/errors.hpp"
#include "schema/requests.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstdlib>

namespace litterbox::client {
namespace {

using schema::host;

/// Percent-encodes everything but RFC 3986 unreserved characters, so an id or cursor can
/// never change the path or add query parameters.
std::string encode(std::string_view s) {
  std::string out;
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) != 0 || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", u);
      out += buf;
    }
  }
  return out;
}

std::string decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      const std::string hex(s.substr(i + 1, 2));
      char* end = nullptr;
      const long v = std::strtol(hex.c_str(), &end, 16);
      if (end == hex.c_str() + 2) {
        out.push_back(static_cast<char>(v));
        i += 2;
        continue;
      }
    }
    out.push_back(s[i] == '+' ? ' ' : s[i]);
  }
  return out;
}

result<host> parse_host(const http_response& r) {
  const auto j = nlohmann::ordered_json::parse(r.body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return make_error(errc::bad_response, "the service sent a host that is not a JSON object");
  }
  auto h = schema::host_from_json(j);
  if (!h) {
    return make_error(errc::bad_response,
                      "the service sent a malformed host: " + h.error().message);
  }
  return std::move(*h);
}

std::optional<std::chrono::milliseconds> retry_after(const http_response& r, timestamp now) {
  const auto it = r.headers.find("retry-after");
  if (it == r.headers.end()) {
    return std::nullopt;
  }
  return parse_retry_after(it->second, now);
}

}  // namespace

error error_from_response(int status, std::string_view body) {
  const auto info = schema::parse_error_body(body);
  std::string detail = info.detail;
  if (detail.empty()) {
    detail = "the service answered HTTP " + std::to_string(status);
  }
  errc code = errc::api_error;
  switch (status) {
    case 401:
    case 403:
      code = errc::auth;
      break;
    case 404:
      code = errc::not_found;
      break;
    case 409:
      code = errc::conflict;
      break;
    case 429:
      code = errc::quota;
      break;
    case 502:
      code = errc::provisioning_failed;
      break;
    case 503:
      code = errc::unavailable;
      break;
    default:
      break;
  }
  if (code == errc::api_error && !info.detail.empty()) {
    detail = "HTTP " + std::to_string(status) + ": " + detail;
  }
  error e = make_error(code, std::move(detail));
  if (status == 422) {
    const auto j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_object() && j.contains("detail") && j["detail"].is_array()) {
      for (const auto& item : j["detail"]) {
        if (!item.is_object()) {
          continue;
        }
        field_issue issue;
        if (const auto loc = item.find("loc"); loc != item.end() && loc->is_array()) {
          for (const auto& part : *loc) {
            issue.loc.push_back(part.is_string() ? part.get<std::string>() : part.dump());
          }
        }
        issue.msg = item.value("msg", std::string{});
        issue.type = item.value("type", std::string{});
        e.issues.push_back(std::move(issue));
      }
    }
  }
  return e;
}

error error_from_response(const http_response& r) {
  error e = error_from_response(r.status, r.body);
  if (r.status != 429) {
    return e;
  }
  const auto it = r.headers.find("retry-after");
  if (it == r.headers.end() || it->second.empty()) {
    return e;
  }
  const bool seconds = std::all_of(it->second.begin(), it->second.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c));
  });
  e.message += " (retry after " + it->second + (seconds ? " s)" : ")");
  return e;
}

std::optional<std::string> next_cursor(std::string_view link_header) {
  std::size_t pos = 0;
  while (pos < link_header.size()) {
    const auto open = link_header.find('<', pos);
    if (open == std::string_view::npos) {
      return std::nullopt;
    }
    const auto close = link_header.find('>', open);
    if (close == std::string_view::npos) {
      return std::nullopt;
    }
    const auto target = link_header.substr(open + 1, close - open - 1);
    const auto next_link = link_header.find('<', close);
    const auto params = link_header.substr(
        close + 1,
        (next_link == std::string_view::npos ? link_header.size() : next_link) - close - 1);
    pos = next_link == std::string_view::npos ? link_header.size() : next_link;
    if (params.find("rel=\"next\"") == std::string_view::npos &&
        params.find("rel=next") == std::string_view::npos) {
      continue;
    }
    const auto q = target.find('?');
    if (q == std::string_view::npos) {
      return std::nullopt;
    }
    auto query = target.substr(q + 1);
    while (!query.empty()) {
      const auto amp = query.find('&');
      const auto param = query.substr(0, amp);
      if (param.starts_with("after=")) {
        return decode(param.substr(6));
      }
      query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    }
    return std::nullopt;
  }
  return std::nullopt;
}

client::client(client_config config, std::unique_ptr<transport> transport, retry_policy policy,
               retry_env env, std::function<timestamp()> wall_now)
    : config_(std::move(config)),
      transport_(std::move(transport)),
      policy_(policy),
      env_(std::move(env)),
      wall_now_(std::move(wall_now)) {}

result<http_response> client::call(const std::string& method, const std::string& path_and_query,
                                   const std::string& body,
                                   std::vector<std::pair<std::string, std::string>> extra_headers,
                                   std::chrono::milliseconds budget, bool* unanswered_before,
                                   bool retry_unanswered) {
  http_request req;
  req.method = method;
  req.url = config_.url + path_and_query;
  req.body = body;
  req.headers = std::move(extra_headers);
  req.headers.emplace_back("Accept", "application/json");
  req.headers.emplace_back("User-Agent", "litterbox-client/0.1");
  if (!body.empty()) {
    req.headers.emplace_back("Content-Type", "application/json");
  }
  if (!config_.token.empty()) {
    req.headers.emplace_back("Authorization", "Bearer " + config_.token);
  }
  const auto deadline = env_.now() + budget;
  std::optional<result<http_response>> last;
  bool unanswered = false;
  if (unanswered_before != nullptr) {
    *unanswered_before = false;
  }
  for (int attempt = 1;; ++attempt) {
    const auto remaining =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - env_.now());
    if (remaining.count() <= 0) {
      break;
    }
    req.timeout = remaining;
    auto r = transport_->send(req);
    const bool retryable = !r || r->status == 503;
    if (!retryable) {
      if (unanswered_before != nullptr) {
        *unanswered_before = unanswered;
      }
      return r;
    }
    unanswered = unanswered || !r;
    if (!r && !retry_unanswered) {
      return r;
    }
    std::optional<std::chrono::milliseconds> after;
    if (r) {
      after = retry_after(*r, wall_now_());
    }
    last = std::move(r);
    if (attempt >= policy_.max_attempts) {
      break;
    }
    const auto delay = backoff_delay(policy_, attempt, env_.uniform(), after);
    if (env_.now() + delay >= deadline) {
      break;
    }
    env_.sleep(delay);
  }
  if (!last) {
    return make_error(errc::unavailable, "timed out before the service answered");
  }
  return std::move(*last);
}

result<created_host> client::create_host(const create_options& o) {
  const int lease_choices = (o.expires_at ? 1 : 0) + (o.expires_in ? 1 : 0) + (o.no_expiry ? 1 : 0);
  if (lease_choices > 1) {
    return make_error(errc::invalid_argument,
                      "choose at most one of expires_at, expires_in and no_expiry");
  }
  schema::create_host_request req;
  req.image = o.image;
  if (!o.env.empty()) {
    req.env = o.env;
  }
  if (o.no_expiry) {
    req.expiry = schema::expiry_kind::never;
  } else if (o.expires_at) {
    req.expiry = schema::expiry_kind::at;
    req.expires_at = o.expires_at;
  } else if (o.expires_in) {
    req.expiry = schema::expiry_kind::at;
    req.expires_at =
        wall_now_() + std::chrono::duration_cast<std::chrono::microseconds>(*o.expires_in);
  }
  if (o.cpus)
    req.cpus = *o.cpus;
  if (o.memory_mib)
    req.memory_mib = *o.memory_mib;
  if (o.disk_gb)
    req.disk_gb = *o.disk_gb;
  req.instance_type = o.instance_type;
  req.ssh_authorized_keys = o.ssh_authorized_keys;
  created_host out;
  out.idempotency_key = o.idempotency_key ? *o.idempotency_key : new_uuid_v7(wall_now_());
  std::vector<std::pair<std::string, std::string>> headers{
      {"Idempotency-Key", out.idempotency_key}};
  if (o.async) {
    headers.emplace_back("Prefer", "respond-async");
  }
  auto r = call("POST", "/hosts", schema::to_json_text(req), std::move(headers),
                o.async ? config_.request_timeout : config_.create_timeout);
  if (!r) {
    return r.error();
  }
  if (r->status != 201 && r->status != 202 && r->status != 200) {
    return error_from_response(*r);
  }
  auto h = parse_host(*r);
  if (!h) {
    return h.error();
  }
  out.host = std::move(*h);
  return out;
}

result<host> client::get_host(std::string_view id) {
  auto r = call("GET", "/hosts/" + encode(id), "", {}, config_.request_timeout);
  if (!r) {
    return r.error();
  }
  if (r->status != 200) {
    return error_from_response(*r);
  }
  return parse_host(*r);
}

result<std::vector<host>> client::list_hosts(const list_options& o) {
  if (o.limit && *o.limit <= 0) {
    return make_error(errc::invalid_argument, "limit must be positive");
  }
  std::vector<host> out;
  std::optional<std::string> after;
  for (;;) {
    std::string query;
    auto add = [&query](std::string_view k, std::string_view v) {
      query += query.empty() ? "?" : "&";
      query += std::string(k) + "=" + encode(v);
    };
    for (const auto s : o.statuses) {
      add("status", schema::to_string(s));
    }
    if (o.limit) {
      add("limit", std::to_string(*o.limit - static_cast<int>(out.size())));
    }
    if (after) {
      add("after", *after);
    }
    auto r = call("GET", "/hosts" + query, "", {}, config_.request_timeout);
    if (!r) {
      return r.error();
    }
    if (r->status != 200) {
      return error_from_response(*r);
    }
    const auto j = nlohmann::ordered_json::parse(r->body, nullptr, false);
    if (!j.is_array()) {
      return make_error(errc::bad_response, "the service sent a host list that is not an array");
    }
    for (const auto& item : j) {
      auto h = schema::host_from_json(item);
      if (!h) {
        return make_error(errc::bad_response,
                          "the service sent a malformed host: " + h.error().message);
      }
      out.push_back(std::move(*h));
    }
    if (o.limit && static_cast<int>(out.size()) >= *o.limit) {
      out.resize(static_cast<std::size_t>(*o.limit));
      return out;
    }
    const auto link = r->headers.find("link");
    if (link == r->headers.end()) {
      return out;
    }
    auto cursor = next_cursor(link->second);
    // A cursor that does not move would loop forever; an empty page means the end.
    if (!cursor || cursor == after || j.empty()) {
      return out;
    }
    after = std::move(cursor);
  }
}

result<host> client::renew_host(std::string_view id, const renew_options& o) {
  if (o.expires_at && o.expires_in) {
    return make_error(errc::invalid_argument, "choose at most one of expires_at and expires_in");
  }
  std::string body;
  std::optional<timestamp> at = o.expires_at;
  if (o.expires_in) {
    at = wall_now_() + std::chrono::duration_cast<std::chrono::microseconds>(*o.expires_in);
  }
  if (at) {
    nlohmann::json j;
    j["expires_at"] = format_rfc3339(*at);
    body = j.dump();
  } else {
    body = "{}";
  }
  auto r = call("POST", "/hosts/" + encode(id) + "/renew", body, {}, config_.request_timeout);
  if (!r) {
    return r.error();
  }
  if (r->status != 200) {
    return error_from_response(*r);
  }
  return parse_host(*r);
}

result<void> client::delete_host(std::string_view id) {
  bool unanswered_before = false;
  auto r =
      call("DELETE", "/hosts/" + encode(id), "", {}, config_.request_timeout, &unanswered_before);
  if (!r) {
    return r.error();
  }
  // The attempt that got no answer may have deleted the host; this 404 then confirms it.
  if (r->status == 404 && unanswered_before) {
    return {};
  }
  if (r->status != 204 && r->status != 200) {
    return error_from_response(*r);
  }
  return {};
}

result<host> client::wait_for(std::string_view id, schema::host_status wanted,
                              std::chrono::milliseconds timeout,
                              const std::function<void(const host&)>& on_change) {
  const auto deadline = env_.now() + timeout;
  std::optional<schema::host_status> seen;
  std::chrono::milliseconds interval{250};
  for (;;) {
    auto h = get_host(id);
    if (!h) {
      return h.error();
    }
    if (!seen || *seen != h->status) {
      seen = h->status;
      if (on_change) {
        on_change(*h);
      }
    }
    if (h->status == wanted) {
      return std::move(*h);
    }
    if (h->status == schema::host_status::error) {
      return make_error(errc::provisioning_failed,
                        h->last_error.empty() ? "host is in status error" : h->last_error);
    }
    if (h->status == schema::host_status::deleting && wanted != schema::host_status::deleting) {
      return make_error(errc::conflict, "host is being deleted");
    }
    if (env_.now() + interval >= deadline) {
      return make_error(errc::timeout, "host " + std::string(id) + " did not become " +
                                           std::string(schema::to_string(wanted)) +
                                           " in time (still " +
                                           std::string(schema::to_string(h->status)) + ")");
    }
    env_.sleep(interval);
    interval = std::min(std::chrono::milliseconds(2000), interval * 3 / 2);
  }
}

result<std::string> client::console(std::string_view id, std::optional<std::size_t> bytes) {
  std::string path = "/hosts/" + encode(id) + "/console";
  if (bytes) {
    path += "?bytes=" + std::to_string(*bytes);
  }
  auto r = call("GET", path, "", {}, config_.request_timeout);
  if (!r) {
    return r.error();
  }
  if (r->status != 200) {
    return error_from_response(*r);
  }
  return std::move(r->body);
}

result<doctor_report> client::doctor() {
  auto r = call("GET", "/doctor", "", {}, config_.request_timeout);
  if (!r) {
    return r.error();
  }
  if (r->status != 200) {
    return error_from_response(*r);
  }
  auto report = schema::doctor_from_json(r->body);
  if (!report) {
    return make_error(errc::bad_response, "the service sent a malformed doctor report");
  }
  return std::move(*report);
}

namespace {

/// `status` is one of `ok`, or a 404/409 confirming an attempt that got no answer.
result<void> expect_status(const http_response& r, std::initializer_list<int> ok,
                           bool unanswered_before, int confirms) {
  if (std::find(ok.begin(), ok.end(), r.status) != ok.end() ||
      (unanswered_before && r.status == confirms)) {
    return {};
  }
  return error_from_response(r);
}

}  // namespace

result<void> client::create_http_proxy(
    std::string_view name, std::string_view target,
    const std::vector<std::pair<std::string, std::string>>& headers) {
  nlohmann::json h = nlohmann::json::object();
  for (const auto& [k, v] : headers) {
    h[k] = v;
  }
  const auto body =
      nlohmann::json{{"name", name}, {"target", target}, {"headers", std::move(h)}}.dump();
  bool unanswered_before = false;
  auto r = call("POST", "/http-proxies", body, {}, config_.request_timeout, &unanswered_before);
  if (!r) {
    return r.error();
  }
  return expect_status(*r, {201}, unanswered_before, 409);
}

result<void> client::delete_http_proxy(std::string_view name) {
  bool unanswered_before = false;
  auto r = call("DELETE", "/http-proxies/" + encode(name), "", {}, config_.request_timeout,
                &unanswered_before);
  if (!r) {
    return r.error();
  }
  return expect_status(*r, {204, 200}, unanswered_before, 404);
}

result<void> client::attach_http_proxy(std::string_view name, std::string_view host_id) {
  auto r = call("POST", "/http-proxies/" + encode(name) + "/hosts/" + encode(host_id), "", {},
                config_.request_timeout);
  if (!r) {
    return r.error();
  }
  return expect_status(*r, {200}, false, 200);
}

result<void> client::detach_http_proxy(std::string_view name, std::string_view host_id) {
  bool unanswered_before = false;
  auto r = call("DELETE", "/http-proxies/" + encode(name) + "/hosts/" + encode(host_id), "", {},
                config_.request_timeout, &unanswered_before);
  if (!r) {
    return r.error();
  }
  return expect_status(*r, {204, 200}, unanswered_before, 404);
}

result<std::vector<http_proxy_info>> client::list_http_proxies() {
  auto r = call("GET", "/http-proxies", "", {}, config_.request_timeout);
  if (!r) {
    return r.error();
  }
  if (r->status != 200) {
    return error_from_response(*r);
  }
  const auto j = nlohmann::json::parse(r->body, nullptr, false);
  if (!j.is_array()) {
    return make_error(errc::bad_response, "the service sent a malformed proxy list");
  }
  std::vector<http_proxy_info> out;
  for (const auto& item : j) {
    if (!item.is_object() || !item.value("name", nlohmann::json()).is_string() ||
        !item.value("target", nlohmann::json()).is_string() ||
        !item.value("host_ids", nlohmann::json()).is_array() ||
        !item.value("created_at", nlohmann::json()).is_string()) {
      return make_error(errc::bad_response, "the service sent a malformed proxy list");
    }
    http_proxy_info p;
    p.name = item["name"].get<std::string>();
    p.target = item["target"].get<std::string>();
    for (const auto& id : item["host_ids"]) {
      if (!id.is_string()) {
        return make_error(errc::bad_response, "the service sent a malformed proxy list");
      }
      p.host_ids.push_back(id.get<std::string>());
    }
    p.created_at = item["created_at"].get<std::string>();
    out.push_back(std::move(p));
  }
  return out;
}

result<std::vector<host_event>> sse_parser::feed(std::string_view bytes) {
  std::vector<host_event> out;
  if (ended_) {
    return out;  // nothing after the server's error counts
  }
  buffer_.append(bytes);
  for (auto end = buffer_.find("\n\n"); end != std::string::npos; end = buffer_.find("\n\n")) {
    const std::string message = buffer_.substr(0, end);
    buffer_.erase(0, end + 2);
    std::string data;
    std::string_view kind;
    std::size_t at = 0;
    while (at <= message.size()) {
      auto nl = message.find('\n', at);
      if (nl == std::string::npos) {
        nl = message.size();
      }
      const std::string_view line(message.data() + at, nl - at);
      if (line.starts_with("data: ")) {
        data += line.substr(6);
      } else if (line.starts_with("data:")) {
        data += line.substr(5);
      } else if (line.starts_with("event:")) {
        kind = line.substr(line.starts_with("event: ") ? 7 : 6);
      } else if (line.starts_with("id: ")) {
        std::int64_t id = 0;
        const auto digits = line.substr(4);
        if (std::from_chars(digits.data(), digits.data() + digits.size(), id).ec == std::errc{}) {
          last_id_ = id;  // an id without data still moves the resume point (as EventSource)
        }
      }
      at = nl + 1;
    }
    if (kind == "error") {
      // The server ends the stream with a reason (history pruned past a lagging reader).
      const auto info = schema::parse_error_body(data);
      ended_ = make_error(errc::api_error, info.detail.empty()
                                               ? "the service ended the event stream with an error"
                                               : info.detail);
      buffer_.clear();
      return out;
    }
    if (data.empty()) {
      continue;  // a comment (keep-alive)
    }
    const auto j = nlohmann::json::parse(data, nullptr, false);
    if (!j.is_object() || !j.contains("id") || !j["id"].is_number_integer()) {
      return make_error(errc::bad_response, "the service sent a malformed event");
    }
    host_event e;
    e.id = j["id"].get<std::int64_t>();
    e.at = j.value("at", "");
    e.host_id = j.value("host_id", "");
    e.type = j.value("type", "");
    e.status = j.value("status", "");
    e.last_error = j.value("last_error", "");
    e.json = std::move(data);
    last_id_ = e.id;
    out.push_back(std::move(e));
  }
  return out;
}

result<void> client::follow_events(const std::optional<std::string>& host_id,
                                   std::optional<std::int64_t> after,
                                   const std::function<bool(const host_event&)>& on_event) {
  const std::string path = host_id ? "/hosts/" + encode(*host_id) + "/events" : "/events";
  // Without a resume point the stream starts now; once an event was seen, every reconnect
  // resumes exactly after it.
  std::optional<std::int64_t> last = after;
  auto failing_since = env_.now();
  int attempt = 0;
  for (;;) {
    http_request req;
    req.method = "GET";
    req.url = config_.url + path;
    req.headers.emplace_back("Accept", "text/event-stream");
    req.headers.emplace_back("User-Agent", "litterbox-client/0.1");
    if (!config_.token.empty()) {
      req.headers.emplace_back("Authorization", "Bearer " + config_.token);
    }
    if (last) {
      req.headers.emplace_back("Last-Event-ID", std::to_string(*last));
    }
    // The server writes a comment at least every 15 s: silence for longer is a dead stream.
    req.timeout = std::chrono::seconds(45);
    sse_parser parser;
    bool stop = false;
    std::optional<error> bad;
    auto r = transport_->stream(req, [&](std::string_view bytes) {
      auto events = parser.feed(bytes);
      if (!events) {
        bad = events.error();
        return false;
      }
      for (const auto& e : *events) {
        last = e.id;
        attempt = 0;
        failing_since = env_.now();
        if (!on_event(e)) {
          stop = true;
          return false;
        }
      }
      if (parser.ended()) {
        bad = *parser.ended();  // resuming would only hear the same again
        return false;
      }
      return true;
    });
    if (bad) {
      return *bad;
    }
    if (stop) {
      return {};
    }
    if (parser.last_id()) {
      last = parser.last_id();  // the stream's own starting point counts too
    }
    if (r && r->status != 200 && r->status != 503) {
      return error_from_response(*r);
    }
    // Dropped, ended or 503: reconnect after a backoff, for at most request_timeout without
    // a single event.
    if (env_.now() - failing_since > config_.request_timeout) {
      return r ? error_from_response(*r) : r.error();
    }
    ++attempt;
    env_.sleep(backoff_delay(policy_, attempt, env_.uniform(), std::nullopt));
  }
}

namespace {

http_request stream_request(const client_config& config, const std::string& path,
                            std::optional<std::int64_t> last_event_id) {
  http_request req;
  req.method = "GET";
  req.url = config.url + path;
  req.headers.emplace_back("Accept", "text/event-stream");
  req.headers.emplace_back("User-Agent", "litterbox-client/0.1");
  if (!config.token.empty()) {
    req.headers.emplace_back("Authorization", "Bearer " + config.token);
  }
  if (last_event_id) {
    req.headers.emplace_back("Last-Event-ID", std::to_string(*last_event_id));
  }
  return req;
}

/// The server writes a comment at least every 15 s: silence for longer is a dead stream.
constexpr std::chrono::milliseconds k_stream_silence{45000};

/// A create is over once its host is active, in error, or being (or done being) deleted.
bool create_is_over(schema::host_status s) {
  return s == schema::host_status::active || s == schema::host_status::error ||
         s == schema::host_status::deleting;
}

/// The outcome of a create whose host is in a status where create_is_over.
result<host> create_outcome(host h) {
  switch (h.status) {
    case schema::host_status::active:
      return h;
    case schema::host_status::error:
      return make_error(errc::provisioning_failed,
                        h.last_error.empty() ? "host is in status error" : h.last_error);
    default:
      return make_error(errc::conflict, "host " + h.id + " was deleted before it became active");
  }
}

error create_timed_out(const std::string& id, std::optional<schema::host_status> last) {
  return make_error(errc::timeout,
                    "host " + id + " did not become active in time" +
                        (last ? " (still " + std::string(schema::to_string(*last)) + ")" : ""));
}

}  // namespace

result<std::int64_t> client::newest_event_id() {
  auto req = stream_request(config_, "/events", std::nullopt);
  req.timeout = config_.request_timeout;
  req.stream_limit = config_.request_timeout;
  sse_parser parser;
  std::optional<error> bad;
  auto r = transport_->stream(req, [&](std::string_view bytes) {
    if (auto events = parser.feed(bytes); !events) {
      bad = events.error();
      return false;
    }
    if (parser.ended()) {
      bad = *parser.ended();
      return false;
    }
    return !parser.last_id().has_value();  // the opening message names it: done
  });
  if (bad) {
    return *bad;
  }
  if (!r) {
    return r.error();
  }
  if (r->status != 200) {
    return error_from_response(*r);
  }
  if (!parser.last_id()) {
    return make_error(errc::bad_response, "the event stream ended before it named an event id");
  }
  return *parser.last_id();
}

struct client::stream_end {
  schema::host_status status = schema::host_status::provisioning;
  std::string last_error;
};

result<client::stream_end> client::follow_create_stream(
    const std::string& id, std::int64_t after, std::chrono::steady_clock::time_point deadline,
    const std::function<void(schema::host_status)>& draw) {
  std::int64_t cursor = after;
  int attempt = 0;
  for (;;) {
    const auto remaining =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - env_.now());
    if (remaining.count() <= 0) {
      return make_error(errc::timeout, "deadline");
    }
    auto req = stream_request(config_, "/hosts/" + encode(id) + "/events", cursor);
    req.timeout = std::min(k_stream_silence, remaining);
    req.stream_limit = remaining;
    sse_parser parser;
    bool opened = false;
    bool late = false;
    std::optional<error> bad;
    std::optional<stream_end> end;
    auto r = transport_->stream(req, [&](std::string_view bytes) {
      opened = true;
      auto events = parser.feed(bytes);
      if (!events) {
        bad = events.error();
        return false;
      }
      for (const auto& e : *events) {
        cursor = e.id;
        attempt = 0;
        const auto status = schema::parse_host_status(e.status);
        if (!status) {
          bad = make_error(errc::bad_response, "the service sent an event with status " + e.status);
          return false;
        }
        draw(*status);
        if (e.type == "deleted" || create_is_over(*status)) {
          end = stream_end{e.type == "deleted" ? schema::host_status::deleting : *status,
                           e.last_error};
          return false;
        }
      }
      if (parser.ended()) {
        bad = *parser.ended();
        return false;
      }
      if (env_.now() >= deadline) {
        late = true;  // keep-alives alone must not keep the create waiting
        return false;
      }
      return true;
    });
    if (end) {
      return *end;
    }
    if (late || env_.now() >= deadline) {
      return make_error(errc::timeout, "deadline");
    }
    if (bad) {
      return *bad;
    }
    // Not answered with a stream at all (no route, 410, 503, unreachable): not resumable.
    if (!opened || (r && r->status != 200)) {
      return r ? error_from_response(*r) : r.error();
    }
    // It was open and dropped or ended: resume after the last event it carried.
    ++attempt;
    const auto delay = backoff_delay(policy_, attempt, env_.uniform(), std::nullopt);
    if (env_.now() + delay >= deadline) {
      return make_error(errc::timeout, "deadline");
    }
    env_.sleep(delay);
  }
}

result<host> client::follow_create(const host& initial, std::optional<std::int64_t> after,
                                   std::chrono::milliseconds timeout,
                                   const std::function<void(schema::host_status)>& on_status) {
  if (create_is_over(initial.status)) {
    return create_outcome(initial);  // e.g. a replay of a create that already ended
  }
  const auto deadline = env_.now() + timeout;
  std::optional<schema::host_status> drawn;
  const auto draw = [&](schema::host_status s) {
    if (drawn != s) {
      drawn = s;
      if (on_status) {
        on_status(s);
      }
    }
  };
  if (after) {
    auto end = follow_create_stream(initial.id, *after, deadline, draw);
    if (end) {
      auto h = get_host(initial.id);
      if (end->status == schema::host_status::active) {
        if (!h) {
          return h.error();
        }
        if (create_is_over(h->status)) {
          return create_outcome(std::move(*h));  // active, or already failed since
        }
      } else {
        if (end->status == schema::host_status::error) {
          // The host's own last_error is the final word; the event's if the host is gone.
          return make_error(errc::provisioning_failed, h && !h->last_error.empty() ? h->last_error
                                                       : !end->last_error.empty()
                                                           ? end->last_error
                                                           : "host is in status error");
        }
        return make_error(errc::conflict,
                          "host " + initial.id + " was deleted before it became active");
      }
    } else if (end.error().code == errc::timeout) {
      return create_timed_out(initial.id, drawn);
    }
    // No stream here, or it broke for good: polling still gets the create to its end.
  }
  const auto remaining =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - env_.now());
  if (remaining.count() <= 0) {
    return create_timed_out(initial.id, drawn);
  }
  return wait_for(initial.id, schema::host_status::active, remaining,
                  [&](const host& h) { draw(h.status); });
}

namespace {

/// An optional string member: absent or null → nullopt; anything else but a string → false.
bool optional_string(const nlohmann::ordered_json& j, const char* name,
                     std::optional<std::string>& out) {
  const auto it = j.find(name);
  if (it == j.end() || it->is_null()) {
    out.reset();
    return true;
  }
  if (!it->is_string()) {
    return false;
  }
  out = it->get<std::string>();
  return true;
}

bool optional_int(const nlohmann::ordered_json& j, const char* name, std::optional<int>& out) {
  const auto it = j.find(name);
  if (it == j.end() || it->is_null()) {
    out.reset();
    return true;
  }
  if (!it->is_number_integer()) {
    return false;
  }
  out = it->get<int>();
  return true;
}

bool required_string(const nlohmann::ordered_json& j, const char* name, std::string& out) {
  const auto it = j.find(name);
  if (it == j.end() || !it->is_string()) {
    return false;
  }
  out = it->get<std::string>();
  return true;
}

/// An id or status the server may write as a number or a string, as text.
bool scalar_text(const nlohmann::ordered_json& j, const char* name, std::string& out) {
  const auto it = j.find(name);
  if (it == j.end()) {
    return false;
  }
  if (it->is_string()) {
    out = it->get<std::string>();
    return true;
  }
  if (it->is_number_integer()) {
    out = std::to_string(it->get<std::int64_t>());
    return true;
  }
  return false;
}

std::optional<key_info> key_from_json(const nlohmann::ordered_json& j) {
  key_info k;
  if (!j.is_object() || !required_string(j, "id", k.id) ||
      !required_string(j, "namespace", k.namespace_name) || !optional_string(j, "name", k.name) ||
      !required_string(j, "created_at", k.created_at)) {
    return std::nullopt;
  }
  if (const auto q = j.find("quota"); q != j.end() && !q->is_null()) {
    if (!q->is_object() || !optional_int(*q, "max_hosts", k.quota.max_hosts) ||
        !optional_int(*q, "max_cpus", k.quota.max_cpus) ||
        !optional_int(*q, "max_memory_mib", k.quota.max_memory_mib)) {
      return std::nullopt;
    }
  }
  k.json = j.dump();
  return k;
}

std::optional<audit_record> audit_from_json(const nlohmann::ordered_json& j) {
  audit_record a;
  if (!j.is_object() || !scalar_text(j, "id", a.id) || !required_string(j, "at", a.at) ||
      !optional_string(j, "key_id", a.key_id) ||
      !required_string(j, "namespace", a.namespace_name) ||
      !required_string(j, "action", a.action) || !optional_string(j, "host_id", a.host_id) ||
      !scalar_text(j, "status", a.status)) {
    return std::nullopt;
  }
  // A call refused before a request id was assigned may leave it out.
  if (const auto it = j.find("request_id"); it != j.end() && it->is_string()) {
    a.request_id = it->get<std::string>();
  }
  a.json = j.dump();
  return a;
}

}  // namespace

result<created_key> client::create_key(const key_request& request) {
  if (request.namespace_name.empty()) {
    return make_error(errc::invalid_argument, "a key needs a namespace");
  }
  nlohmann::ordered_json body = nlohmann::ordered_json::object();
  body["namespace"] = request.namespace_name;
  if (request.name) {
    body["name"] = *request.name;
  }
  const auto& q = request.quota;
  if (q.max_hosts || q.max_cpus || q.max_memory_mib) {
    nlohmann::ordered_json quota = nlohmann::ordered_json::object();
    if (q.max_hosts) {
      quota["max_hosts"] = *q.max_hosts;
    }
    if (q.max_cpus) {
      quota["max_cpus"] = *q.max_cpus;
    }
    if (q.max_memory_mib) {
      quota["max_memory_mib"] = *q.max_memory_mib;
    }
    body["quota"] = std::move(quota);
  }
  // No Idempotency-Key on this route: a retry after an attempt that got no answer could
  // mint a second key, so only answered 503s are retried.
  auto r = call("POST", "/keys", body.dump(), {}, config_.request_timeout, nullptr, false);
  if (!r) {
    return make_error(
        errc::unavailable,
        r.error().message + " (the key may have been created: see `litterbox keys ls`)");
  }
  if (r->status != 201 && r->status != 200) {
    return error_from_response(*r);
  }
  const auto j = nlohmann::ordered_json::parse(r->body, nullptr, false);
  auto info = key_from_json(j);
  if (!info || !j.contains("key") || !j["key"].is_string() || j["key"].get<std::string>().empty()) {
    return make_error(errc::bad_response, "the service sent a malformed key");
  }
  created_key out{std::move(*info), j["key"].get<std::string>(), j.dump()};
  // key_info never holds the secret, not even in its copy of the JSON.
  auto listed = nlohmann::ordered_json::parse(out.info.json);
  listed.erase("key");
  out.info.json = listed.dump();
  return out;
}

result<std::vector<key_info>> client::list_keys() {
  auto r = call("GET", "/keys", "", {}, config_.request_timeout);
  if (!r) {
    return r.error();
  }
  if (r->status != 200) {
    return error_from_response(*r);
  }
  const auto j = nlohmann::ordered_json::parse(r->body, nullptr, false);
  if (!j.is_array()) {
    return make_error(errc::bad_response, "the service sent a key list that is not an array");
  }
  std::vector<key_info> out;
  for (const auto& item : j) {
    auto k = key_from_json(item);
    if (!k) {
      return make_error(errc::bad_response, "the service sent a malformed key");
    }
    out.push_back(std::move(*k));
  }
  return out;
}

result<void> client::delete_key(std::string_view id) {
  bool unanswered_before = false;
  auto r =
      call("DELETE", "/keys/" + encode(id), "", {}, config_.request_timeout, &unanswered_before);
  if (!r) {
    return r.error();
  }
  return expect_status(*r, {204, 200}, unanswered_before, 404);
}

result<std::vector<audit_record>> client::list_audit(const audit_options& o) {
  if (o.limit && *o.limit <= 0) {
    return make_error(errc::invalid_argument, "limit must be positive");
  }
  std::vector<audit_record> out;
  std::optional<std::string> after = o.after;
  for (;;) {
    std::string query;
    auto add = [&query](std::string_view k, std::string_view v) {
      query += query.empty() ? "?" : "&";
      query += std::string(k) + "=" + encode(v);
    };
    if (o.namespace_name) {
      add("namespace", *o.namespace_name);
    }
    if (after) {
      add("after", *after);
    }
    if (o.limit) {
      add("limit", std::to_string(*o.limit - static_cast<int>(out.size())));
    }
    auto r = call("GET", "/audit" + query, "", {}, config_.request_timeout);
    if (!r) {
      return r.error();
    }
    if (r->status != 200) {
      return error_from_response(*r);
    }
    const auto j = nlohmann::ordered_json::parse(r->body, nullptr, false);
    if (!j.is_array()) {
      return make_error(errc::bad_response, "the service sent an audit log that is not an array");
    }
    for (const auto& item : j) {
      auto a = audit_from_json(item);
      if (!a) {
        return make_error(errc::bad_response, "the service sent a malformed audit record");
      }
      out.push_back(std::move(*a));
    }
    if (j.empty() || (o.limit && static_cast<int>(out.size()) >= *o.limit)) {
      if (o.limit && static_cast<int>(out.size()) > *o.limit) {
        out.resize(static_cast<std::size_t>(*o.limit));
      }
      return out;
    }
    // The next page: where the server's rel="next" link says, else after the last record.
    std::optional<std::string> cursor;
    if (const auto link = r->headers.find("link"); link != r->headers.end()) {
      cursor = next_cursor(link->second);
    }
    if (!cursor) {
      cursor = out.back().id;
    }
    if (cursor == after) {
      return out;  // a cursor that does not move would loop forever
    }
    after = std::move(cursor);
  }
}

}  // namespace litterbox::client
