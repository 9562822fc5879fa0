#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace litterbox::client::test {

/// A scripted answer: a full HTTP status and body, or (close_only) hanging up unanswered.
struct stub_answer {
  int status = 200;
  std::string body;
  bool close_only = false;
  std::vector<std::pair<std::string, std::string>> headers{};  ///< extra response headers
};

/// A one-thread HTTP/1.1 server on 127.0.0.1:<ephemeral> that answers requests from a
/// script, one connection per request, and records each request's headers (lowercased).
class stub_server {
 public:
  explicit stub_server(std::deque<stub_answer> script);
  ~stub_server();
  stub_server(const stub_server&) = delete;
  stub_server& operator=(const stub_server&) = delete;

  std::uint16_t port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  /// Headers of every request received so far; the request line ("GET /hosts HTTP/1.1")
  /// is under the key ":request".
  std::vector<std::map<std::string, std::string>> requests() const;
  /// Body of every complete request received so far, in order.
  std::vector<std::string> bodies() const;

 private:
  void serve();

  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  mutable std::mutex mutex_;
  std::deque<stub_answer> script_;
  std::vector<std::map<std::string, std::string>> requests_;
  std::vector<std::string> bodies_;
  std::thread thread_;
};

}  // namespace litterbox::client::test
