#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace litterbox::test {

/// One HTTP header as it appeared on the wire (name keeps its original case).
using http_header = std::pair<std::string, std::string>;

/// A request to send: method, target (path and query), headers and body. `Host`,
/// `Content-Length` (when there is a body or the method is POST/PUT/PATCH) and
/// `Connection: close` are added unless present.
struct http_request {
  std::string method = "GET";
  std::string target = "/";
  std::vector<http_header> headers;
  std::string body;
};

/// A parsed response. `status` is 0 when no complete status line arrived; `error` then says
/// why (timeout, connection refused, closed early…).
struct http_response {
  int status = 0;
  std::string reason;
  std::vector<http_header> headers;
  std::string body;
  /// Transport or parse problem; empty when the response arrived whole.
  std::string error;

  /// The first header named `name` (case-insensitive), if any.
  std::optional<std::string> header(std::string_view name) const;
  /// Every header named `name` (case-insensitive), in wire order.
  std::vector<std::string> header_values(std::string_view name) const;
};

/// Prints status, headers and body so a failed expectation shows the whole response.
std::ostream& operator<<(std::ostream& os, const http_response& r);

/// One TCP connection to a server on loopback, with a deadline on every operation. Blocking;
/// not thread-safe (use one per thread).
class http_connection {
 public:
  /// Connects within `timeout`; `connected()` says whether it worked, `error()` why not.
  http_connection(std::string host, std::uint16_t port, std::chrono::milliseconds timeout);
  ~http_connection();
  http_connection(const http_connection&) = delete;
  http_connection& operator=(const http_connection&) = delete;

  bool connected() const { return fd_ >= 0 && connect_ok_; }
  const std::string& error() const { return error_; }

  /// Writes all of `bytes` (or fails on timeout / reset). False on failure.
  bool write(std::string_view bytes);
  /// Reads one response. A response that is cut short has `error` set. `head_request`: the
  /// response to a HEAD carries no body. Interim responses (1xx but 101) are skipped, unless
  /// `stop_at_interim`: then the first one is returned (it has no body).
  http_response read_response(bool head_request = false, bool stop_at_interim = false);
  /// Waits until the peer closes the connection (EOF or reset) or `timeout` passes. Any
  /// bytes that arrive meanwhile are appended to `received`. True when closed.
  bool wait_closed(std::chrono::milliseconds timeout, std::string* received = nullptr);
  /// Closes our side.
  void close();

 private:
  /// Reads more bytes into buffer_; 0 on EOF, -1 on error/timeout (error_ set).
  long fill(std::chrono::steady_clock::time_point deadline);

  int fd_ = -1;
  bool connect_ok_ = false;
  std::chrono::milliseconds timeout_;
  std::string buffer_;
  std::string error_;
};

/// A request-per-connection client: every call opens a new connection, so calls from
/// several threads at once are fine (one client per thread is not needed).
class http_client {
 public:
  http_client(std::string host, std::uint16_t port,
              std::chrono::milliseconds timeout = std::chrono::seconds(30));

  /// Sends `request` on a fresh connection and reads the response.
  http_response send(const http_request& request) const;
  /// Sends `raw` bytes exactly as given (for malformed input) and reads one response.
  http_response send_raw(std::string_view raw) const;

  http_response get(std::string target, std::vector<http_header> headers = {}) const;
  http_response post(std::string target, std::string body,
                     std::vector<http_header> headers = {}) const;
  http_response del(std::string target, std::vector<http_header> headers = {}) const;

  const std::string& host() const { return host_; }
  std::uint16_t port() const { return port_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

 private:
  std::string host_;
  std::uint16_t port_;
  std::chrono::milliseconds timeout_;
};

/// Renders `request` as HTTP/1.1 bytes (adds Host, Content-Length, Connection as described
/// on http_request).
std::string serialize(const http_request& request, std::string_view host_header);

}  // namespace litterbox::test
