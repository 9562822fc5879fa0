#pragma once

#include "base/clock.hpp"
#include "base/result.hpp"
#include "client/config.hpp"
#include "client/retry.hpp"
#include "client/transport.hpp"
#include "schema/doctor.hpp"
#include "schema/host.hpp"

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace litterbox::client {

/// What to create. Every field is optional; the server fills in defaults. At most one of
/// `expires_at`, `expires_in` and `no_expiry` may be set (none: the server's default lease).
struct create_options {
  std::optional<std::string> image;
  std::map<std::string, std::string> env;  ///< write-only; never echoed back
  std::optional<timestamp> expires_at;
  std::optional<std::chrono::seconds> expires_in;  ///< lease counted from now
  bool no_expiry = false;
  std::optional<int> cpus;
  std::optional<int> memory_mib;
  std::optional<int> disk_gb;
  std::optional<std::string> instance_type;
  /// Public keys for the login user; when absent the server mints a pair and returns the
  /// private half once in `host.private_key`.
  std::optional<std::vector<std::string>> ssh_authorized_keys;
  /// Makes retries safe: generated (a UUIDv7) when absent, and reused by every retry.
  std::optional<std::string> idempotency_key;
  /// Ask for `Prefer: respond-async`: return at once with the host in its current state
  /// instead of blocking until active; then follow_create (or wait_for) waits for it.
  bool async = false;
};

/// A create's answer: the host and the key under which it was created (to retry with).
struct created_host {
  schema::host host;
  std::string idempotency_key;
};

/// GET /hosts filters.
struct list_options {
  std::vector<schema::host_status> statuses;  ///< any of these; empty: all
  std::optional<int> limit;                   ///< at most this many hosts in total
};

/// A renewal: a new lease end, a lease counted from now, or (neither) the server's default.
struct renew_options {
  std::optional<timestamp> expires_at;
  std::optional<std::chrono::seconds> expires_in;
};

/// GET /doctor, as the server writes it (one wire type for both sides).
using schema::doctor_check;
using schema::doctor_report;

/// An HTTP proxy as GET /http-proxies lists it (never its headers).
struct http_proxy_info {
  std::string name;
  std::string target;
  std::vector<std::string> host_ids;
  std::string created_at;  ///< RFC 3339, as the server wrote it
};

/// Turns a non-success response into the matching error: 401/403 auth, 404 not_found,
/// 409 conflict, 429 quota, 502 provisioning_failed, 503 unavailable, else api_error
/// (message carries the status). The message is the body's `detail`; a 422 list also fills
/// `issues`.
error error_from_response(int status, std::string_view body);
/// The same, and a 429's message ends with when to retry, from its Retry-After header
/// ("quota exceeded: max_hosts=5 (retry after 30 s)").
error error_from_response(const http_response& response);

/// The `after` cursor of the rel="next" link in a Link header; nullopt when there is none.
std::optional<std::string> next_cursor(std::string_view link_header);

/// One host event as GET /events sends it (API.md "Events").
struct host_event {
  std::int64_t id = 0;
  std::string at;
  std::string host_id;
  std::string type;  ///< created, status, deleted, died
  std::string status;
  std::string last_error;
  std::string json;  ///< the data line as the server sent it
};

/// Splits a Server-Sent Events byte stream into host events: `id:` and `data:` lines,
/// comments skipped, messages ended by a blank line; pieces may split anywhere.
class sse_parser {
 public:
  /// The events completed by `bytes`, up to an `event: error` message if one comes (see
  /// ended). Errors: bad_response for a data line that is not an Event object.
  result<std::vector<host_event>> feed(std::string_view bytes);
  /// The newest `id:` seen, with or without data: where a reconnect resumes.
  std::optional<std::int64_t> last_id() const { return last_id_; }
  /// Set once the server ended the stream with `event: error`: api_error with its `detail`
  /// (e.g. "event history no longer available"). Later bytes are ignored.
  const std::optional<error>& ended() const { return ended_; }

 private:
  std::string buffer_;
  std::optional<std::int64_t> last_id_;
  std::optional<error> ended_;
};

/// The limits of a namespace (API.md "Tenants: scoped keys"); nullopt: no limit.
struct key_quota {
  std::optional<int> max_hosts;
  std::optional<int> max_cpus;
  std::optional<int> max_memory_mib;
};

/// What POST /keys asks for.
struct key_request {
  std::string namespace_name;
  std::optional<std::string> name;
  key_quota quota;
};

/// A scoped key as GET /keys lists it (never the secret).
struct key_info {
  std::string id;
  std::string namespace_name;
  std::optional<std::string> name;
  key_quota quota;
  std::string created_at;  ///< RFC 3339, as the server wrote it
  std::string json;        ///< the object as the server sent it
};

/// POST /keys' answer: the key and, this once, its secret.
struct created_key {
  key_info info;
  std::string key;   ///< the secret (`lbk_…`); the server never shows it again
  std::string json;  ///< the 201 body as the server sent it, key included
};

/// One GET /audit record: who (key_id; null for an admin token), what, when, the outcome.
struct audit_record {
  std::string id;  ///< the cursor for `after` (the server's id, integer or string)
  std::string at;
  std::optional<std::string> key_id;
  std::string namespace_name;
  std::string action;
  std::optional<std::string> host_id;
  std::string request_id;
  std::string status;  ///< the outcome as the server wrote it (an HTTP status)
  std::string json;    ///< the object as the server sent it
};

/// GET /audit filters.
struct audit_options {
  std::optional<std::string> namespace_name;
  std::optional<std::string> after;  ///< start after this record id
  std::optional<int> limit;          ///< at most this many records in total
};

/// A blocking client of the host API (API.md). Calls are retried with jittered backoff on
/// transport failures and 503 — creates too, always under an Idempotency-Key, so a retry
/// never makes a second VM. Not thread-safe: use one client per thread.
class client {
 public:
  client(
      client_config config, std::unique_ptr<transport> transport, retry_policy policy = {},
      retry_env env = system_retry_env(),
      std::function<timestamp()> wall_now = [] { return system_clock{}.now(); });

  /// POST /hosts. Blocks up to the create timeout unless `options.async`.
  /// Errors: invalid_argument, auth, api_error (422, 400), provisioning_failed, unavailable.
  result<created_host> create_host(const create_options& options);
  /// GET /hosts/{id}. Errors: not_found, auth, api_error (malformed id), unavailable.
  result<schema::host> get_host(std::string_view id);
  /// GET /hosts, following rel="next" links until the end or `limit`.
  result<std::vector<schema::host>> list_hosts(const list_options& options = {});
  /// POST /hosts/{id}/renew. Errors: not_found, conflict (state), auth, unavailable.
  result<schema::host> renew_host(std::string_view id, const renew_options& options = {});
  /// DELETE /hosts/{id}. A 404 answering a retry whose earlier attempt got no answer (the
  /// connection broke after the server may have deleted the host) is success: the host is
  /// gone either way. Errors: not_found (a first answer of 404, or a 404 after only 503s,
  /// which say the server did not act), conflict, unavailable.
  result<void> delete_host(std::string_view id);
  /// Polls GET /hosts/{id} until the host is in `wanted`. `on_change` sees every new status.
  /// Errors: provisioning_failed when the host ends in `error` (message = last_error) unless
  /// that is what was wanted; timeout; and those of get_host.
  result<schema::host> wait_for(std::string_view id, schema::host_status wanted,
                                std::chrono::milliseconds timeout,
                                const std::function<void(const schema::host&)>& on_change = {});
  /// The id of the newest event, as GET /events announces it when it opens (the stream is
  /// closed right after): following from it later misses nothing that happens after this
  /// call. Errors: not_found or api_error (404/405: no event stream here, as in the drukbox
  /// profile), auth, bad_response (no id before the stream ended), unavailable.
  result<std::int64_t> newest_event_id();
  /// Waits until the host `initial` (a create's answer) is active and reports each status
  /// it goes through, once, in order, as it happens. With `after` (newest_event_id taken
  /// before the create, so that no change is missed) it reads GET /hosts/{id}/events; a
  /// stream that drops is resumed with Last-Event-ID. Without `after`, or when the stream
  /// cannot be opened (404/405 from a server without it, 410, any error) or resumed, it
  /// polls like wait_for. Gives up at `timeout`, whatever the stream does; once a terminal
  /// status is seen, fetches the host once for the final object. Errors:
  /// provisioning_failed (the host ended in error; message = its last_error), conflict (it
  /// was deleted meanwhile), timeout, and those of get_host.
  result<schema::host> follow_create(
      const schema::host& initial, std::optional<std::int64_t> after,
      std::chrono::milliseconds timeout,
      const std::function<void(schema::host_status)>& on_status = {});
  /// GET /hosts/{id}/console: the tail of the guest's serial console.
  result<std::string> console(std::string_view id, std::optional<std::size_t> bytes = {});
  /// GET /doctor.
  result<doctor_report> doctor();
  /// GET /events, or GET /hosts/{host_id}/events when `host_id` is set: calls `on_event` for
  /// every event, in order, until it returns false. `after`: resume after this event id
  /// (nullopt: start with what happens next). A dropped connection is re-opened with
  /// Last-Event-ID (retry policy backoff), so no event is missed or repeated. Errors:
  /// not_found (no such host), api_error (410: the resume point is older than the
  /// retention), auth, unavailable (the service stayed unreachable for request_timeout).
  result<void> follow_events(const std::optional<std::string>& host_id,
                             std::optional<std::int64_t> after,
                             const std::function<bool(const host_event&)>& on_event);

  // HTTP proxies (API.md "HTTP proxies"). `headers` are sent once and never come back.

  /// POST /http-proxies. A 409 answering a retry whose earlier attempt got no answer is
  /// success (that attempt created it). Errors: conflict (name taken), api_error (422: the
  /// message lists the problems), auth, unavailable.
  result<void> create_http_proxy(std::string_view name, std::string_view target,
                                 const std::vector<std::pair<std::string, std::string>>& headers);
  /// DELETE /http-proxies/{name}; a 404 after an unanswered attempt is success. Errors:
  /// not_found, auth, unavailable.
  result<void> delete_http_proxy(std::string_view name);
  /// POST /http-proxies/{name}/hosts/{host_id} (idempotent). Errors: not_found, conflict
  /// (the host has no VM), auth, unavailable.
  result<void> attach_http_proxy(std::string_view name, std::string_view host_id);
  /// DELETE /http-proxies/{name}/hosts/{host_id}; a 404 after an unanswered attempt is
  /// success. Errors: not_found (not attached), auth, unavailable.
  result<void> detach_http_proxy(std::string_view name, std::string_view host_id);
  /// GET /http-proxies, by name.
  result<std::vector<http_proxy_info>> list_http_proxies();

  // Tenants (API.md "Tenants: scoped keys"); admin tokens only.

  /// POST /keys. Not retried after an attempt that got no answer (a second key would be
  /// minted); 503s are retried. Errors: invalid_argument (empty namespace), api_error (422),
  /// auth, unavailable.
  result<created_key> create_key(const key_request& request);
  /// GET /keys.
  result<std::vector<key_info>> list_keys();
  /// DELETE /keys/{id}; a 404 after an unanswered attempt is success (it was revoked).
  /// Errors: not_found, auth, unavailable.
  result<void> delete_key(std::string_view id);
  /// GET /audit, oldest first, following pages (rel="next" links, else `after` the last
  /// record) to the end or `limit`. Errors: invalid_argument (limit not positive), auth,
  /// api_error (422), bad_response, unavailable.
  result<std::vector<audit_record>> list_audit(const audit_options& options = {});

  const client_config& config() const { return config_; }

 private:
  /// Sends with retries. `unanswered_before`, when given, is set to whether an attempt
  /// before the one returned got no response at all (the server may have acted on it).
  result<http_response> call(const std::string& method, const std::string& path_and_query,
                             const std::string& body,
                             std::vector<std::pair<std::string, std::string>> extra_headers,
                             std::chrono::milliseconds budget, bool* unanswered_before = nullptr,
                             bool retry_unanswered = true);
  /// What follow_create's stream phase saw last: the terminal event, or why it stopped.
  struct stream_end;
  result<stream_end> follow_create_stream(const std::string& id, std::int64_t after,
                                          std::chrono::steady_clock::time_point deadline,
                                          const std::function<void(schema::host_status)>& draw);

  client_config config_;
  std::unique_ptr<transport> transport_;
  retry_policy policy_;
  retry_env env_;
  std::function<timestamp()> wall_now_;
};

}  // namespace litterbox::client
