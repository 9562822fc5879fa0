#pragma once

#include "client/client.hpp"
#include "client/errc.hpp"
#include "client/retry.hpp"
#include "client/transport.hpp"

#include <chrono>
#include <deque>
#include <string>
#include <vector>

namespace litterbox::client::test {

/// Time that moves only when the client sleeps or a scripted stream lets it pass.
struct fake_time {
  std::chrono::steady_clock::time_point now{};
  std::vector<std::chrono::milliseconds> sleeps;
  retry_env env() {
    return retry_env{[this] { return now; },
                     [this](std::chrono::milliseconds d) {
                       sleeps.push_back(d);
                       now += d;
                     },
                     [] { return 0.5; }};
  }
};

/// One scripted answer to transport::stream: `pieces` go to on_body one by one (each after
/// `per_piece` of fake time) until it returns false; then `idle` passes and `end` is
/// returned. A non-200 `end` gets no pieces, as from a real server.
struct stream_answer {
  result<http_response> end;
  std::vector<std::string> pieces;
  std::chrono::milliseconds per_piece{0};
  std::chrono::milliseconds idle{0};
};

/// A transport that answers from scripts and records what it was asked.
class fake_transport final : public transport {
 public:
  explicit fake_transport(fake_time& time) : time_(time) {}

  std::deque<result<http_response>> answers;
  std::vector<http_request> seen;
  std::deque<stream_answer> streams;
  std::vector<http_request> streamed;
  std::vector<std::size_t> pieces_taken;  ///< per stream: how many pieces on_body accepted

  result<http_response> send(const http_request& request) override {
    seen.push_back(request);
    if (answers.empty()) {
      return make_error(errc::unavailable, "script exhausted");
    }
    auto r = std::move(answers.front());
    answers.pop_front();
    return r;
  }

  result<http_response> stream(const http_request& request,
                               const std::function<bool(std::string_view)>& on_body) override {
    streamed.push_back(request);
    if (streams.empty()) {
      pieces_taken.push_back(0);
      return make_error(errc::unavailable, "stream script exhausted");
    }
    auto s = std::move(streams.front());
    streams.pop_front();
    std::size_t taken = 0;
    const bool ok_stream = s.end.has_value() ? s.end->status == 200 : true;
    for (const auto& piece : s.pieces) {
      if (!ok_stream) {
        break;
      }
      time_.now += s.per_piece;
      ++taken;
      if (!on_body(piece)) {
        pieces_taken.push_back(taken);
        return http_response{200, {}, ""};  // the caller stopped it: a clean end
      }
    }
    pieces_taken.push_back(taken);
    time_.now += s.idle;
    return s.end;
  }

 private:
  fake_time& time_;
};

inline http_response response(int status, std::string body = {},
                              std::map<std::string, std::string> headers = {}) {
  return http_response{status, std::move(headers), std::move(body)};
}

/// A header's value in a recorded request ("" when absent).
inline std::string header(const http_request& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) {
      return v;
    }
  }
  return "";
}

}  // namespace litterbox::client::test
