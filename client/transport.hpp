#pragma once

#include "base/result.hpp"

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace litterbox::client {

/// One HTTP request as the client builds it.
struct http_request {
  std::string method;  ///< GET, POST, DELETE
  std::string url;     ///< absolute
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::chrono::milliseconds timeout{30000};  ///< whole exchange, connect included
  /// stream() only: the whole stream at most this long, however busy (0: no bound). A
  /// caller with a deadline sets it so that keep-alives cannot hold it past the deadline.
  std::chrono::milliseconds stream_limit{0};
};

/// One HTTP response; header names are lowercased, later duplicates win.
struct http_response {
  int status = 0;
  std::map<std::string, std::string> headers;
  std::string body;
};

/// Sends HTTP requests. Any status is a response; only failing to get one (connect refused,
/// timeout, TLS, broken connection) is an error: errc::unavailable with a message naming the
/// cause but never the headers (they carry the token). Blocks; one call at a time per object.
class transport {
 public:
  virtual ~transport() = default;
  virtual result<http_response> send(const http_request& request) = 0;

  /// Sends `request` and hands the body of a 200 to `on_body` piece by piece as it arrives,
  /// for as long as the server sends and `on_body` returns true; request.timeout bounds only
  /// the silence between pieces (a stream sends keep-alives) and request.stream_limit, when
  /// set, the whole exchange. Returns the response with the
  /// body of a non-200 answer (an error body) and an empty one for a 200. Errors:
  /// unavailable when the connection failed or fell silent.
  virtual result<http_response> stream(const http_request& request,
                                       const std::function<bool(std::string_view)>& on_body) {
    (void)request;
    (void)on_body;
    return make_error(std::make_error_code(std::errc::operation_not_supported),
                      "this transport cannot stream");
  }
};

/// libcurl: handles timeouts, proxies and TLS for us, and compiles in seconds, where Beast's
/// client side would add a heavy template instantiation for what is a blocking CLI call.
std::unique_ptr<transport> make_curl_transport();

}  // namespace litterbox::client
