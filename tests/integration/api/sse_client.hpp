#pragma once

#include "tests/integration/api/api_fixture.hpp"

#include <arpa/inet.h>
#include <chrono>
#include <cstdint>
#include <functional>
#include <netinet/in.h>
#include <poll.h>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

namespace litterbox::test::api {

/// One SSE message: its `id:` and the JSON of its `data:`.
struct sse_event {
  std::int64_t id = 0;
  json data;
};

/// A raw event-stream client: sends one GET and decodes the chunked SSE body as it arrives,
/// with a deadline on every wait.
class sse_client {
 public:
  sse_client(std::uint16_t port, const std::string& target,
             const std::vector<std::string>& extra_headers = {}, std::string_view token = k_token) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      return;
    }
    std::string req = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " +
                      std::string(token) + "\r\n";
    for (const auto& h : extra_headers) {
      req += h + "\r\n";
    }
    req += "\r\n";
    ok_ = ::send(fd_, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size());
  }
  ~sse_client() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  sse_client(const sse_client&) = delete;
  sse_client& operator=(const sse_client&) = delete;

  /// Reads until the status line and headers are in; their text ("" on timeout).
  std::string head(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (raw_.find("\r\n\r\n") == std::string::npos && fill(deadline)) {
    }
    const auto end = raw_.find("\r\n\r\n");
    if (end == std::string::npos) {
      return {};
    }
    std::string h = raw_.substr(0, end + 4);
    raw_.erase(0, end + 4);
    return h;
  }

  /// Reads until `done(events so far)` holds or `timeout` passes; every event read.
  std::vector<sse_event> until(const std::function<bool(const std::vector<sse_event>&)>& done,
                               std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      decode();
      if (done(events_) || !fill(deadline)) {
        decode();
        return events_;
      }
    }
  }

  /// The comment lines seen so far (": stream open", ": keep-alive").
  const std::vector<std::string>& comments() const { return comments_; }

 private:
  bool fill(std::chrono::steady_clock::time_point deadline) {
    if (!ok_) {
      return false;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return false;
    }
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
      return false;
    }
    char buf[8192];
    const auto n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) {
      return false;
    }
    raw_.append(buf, static_cast<std::size_t>(n));
    return true;
  }

  // De-chunks raw_ into body_, then splits body_ into SSE messages.
  void decode() {
    for (;;) {
      const auto eol = raw_.find("\r\n");
      if (eol == std::string::npos) {
        break;
      }
      const auto size = std::stoul(raw_.substr(0, eol), nullptr, 16);
      if (raw_.size() < eol + 2 + size + 2) {
        break;
      }
      body_ += raw_.substr(eol + 2, size);
      raw_.erase(0, eol + 2 + size + 2);
    }
    for (auto end = body_.find("\n\n"); end != std::string::npos; end = body_.find("\n\n")) {
      const std::string message = body_.substr(0, end);
      body_.erase(0, end + 2);
      if (message.rfind(':', 0) == 0) {
        comments_.push_back(message);
        continue;
      }
      sse_event e;
      std::size_t at = 0;
      while (at < message.size()) {
        auto nl = message.find('\n', at);
        if (nl == std::string::npos) {
          nl = message.size();
        }
        const std::string line = message.substr(at, nl - at);
        if (line.rfind("id: ", 0) == 0) {
          e.id = std::stoll(line.substr(4));
        } else if (line.rfind("data: ", 0) == 0) {
          e.data = json::parse(line.substr(6));
        }
        at = nl + 1;
      }
      events_.push_back(std::move(e));
    }
  }

  int fd_ = -1;
  bool ok_ = false;
  std::string raw_;
  std::string body_;
  std::vector<sse_event> events_;
  std::vector<std::string> comments_;
};

}  // namespace litterbox::test::api
