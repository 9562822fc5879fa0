#include "tests/integration/api/api_fixture.hpp"

#include <arpa/inet.h>
#include <chrono>
#include <functional>
#include <memory>
#include <netinet/in.h>
#include <optional>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

namespace litterbox::test::api {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view k_unknown_id = "01890a5d-ac96-774b-bcce-b302099a8057";

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
             const std::vector<std::string>& extra_headers = {}) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      return;
    }
    std::string req = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " +
                      std::string(k_token) + "\r\n";
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
  std::string head(std::chrono::milliseconds timeout = 10s) {
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
                               std::chrono::milliseconds timeout = 20s) {
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

std::vector<std::pair<std::string, std::string>> kinds_of(const std::vector<sse_event>& events,
                                                          const std::string& host_id) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& e : events) {
    if (e.data["host_id"] == host_id) {
      out.emplace_back(e.data["type"].get<std::string>(), e.data["status"].get<std::string>());
    }
  }
  return out;
}

bool has_status(const std::vector<sse_event>& events, const std::string& host_id,
                std::string_view status) {
  for (const auto& e : events) {
    if (e.data["host_id"] == host_id && e.data["status"] == status) {
      return true;
    }
  }
  return false;
}

class events : public api_test {};

TEST_F(events, ACreatesStreamShowsEveryTransitionInOrderWithIdsAndData) {
  sse_client stream(process().port(), "/events");
  const auto head = stream.head();
  ASSERT_NE(head.find("200 OK"), std::string::npos) << head;
  ASSERT_NE(head.find("Content-Type: text/event-stream"), std::string::npos) << head;
  // The stream's starting point is fixed once it is open.
  stream.until([&](const auto&) { return !stream.comments().empty(); });
  ASSERT_FALSE(stream.comments().empty());

  const auto h = create_active();
  const std::string id = h["id"];
  const auto got = stream.until([&](const auto& ev) { return has_status(ev, id, "active"); });
  using P = std::pair<std::string, std::string>;
  EXPECT_EQ(kinds_of(got, id),
            (std::vector<P>{P{"created", "provisioning"}, P{"status", "pulling_image"},
                            P{"status", "creating_vm"}, P{"status", "bootstrapping"},
                            P{"status", "active"}}));
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].data["id"], got[i].id);
    EXPECT_TRUE(is_utc_timestamp(got[i].data["at"].get<std::string>()));
    EXPECT_TRUE(got[i].data.contains("last_error"));
    if (i > 0) {
      EXPECT_GT(got[i].id, got[i - 1].id);
    }
  }
}

TEST_F(events, ResumingAfterAnIdGetsEveryLaterEventExactlyOnce) {
  const auto h = create_active();
  const std::string id = h["id"];
  sse_client all(process().port(), "/hosts/" + id + "/events?after=0");
  ASSERT_NE(all.head().find("200 OK"), std::string::npos);
  const auto first = all.until([&](const auto& ev) { return has_status(ev, id, "active"); });
  ASSERT_EQ(first.size(), 5U);

  const auto resume_at = std::to_string(first[1].id);
  sse_client resumed(process().port(), "/events?host_id=" + id + "&after=0",
                     {"Last-Event-ID: " + resume_at});  // the header wins over ?after=
  ASSERT_NE(resumed.head().find("200 OK"), std::string::npos);
  const auto rest = resumed.until([&](const auto& ev) { return has_status(ev, id, "active"); });
  ASSERT_EQ(rest.size(), 3U);
  for (std::size_t i = 0; i < rest.size(); ++i) {
    EXPECT_EQ(rest[i].id, first[i + 2].id);
  }

  ASSERT_EQ(call("DELETE", "/hosts/" + id).status, 204);
  const auto after_delete = resumed.until(
      [&](const auto& ev) { return !ev.empty() && ev.back().data["type"] == "deleted"; });
  ASSERT_FALSE(after_delete.empty());
  EXPECT_EQ(after_delete.back().data["type"], "deleted");
}

TEST_F(events, StatusFiltersKeepOnlyThoseEvents) {
  const auto h = create_active();
  const std::string id = h["id"];
  sse_client active_only(process().port(),
                         "/events?after=0&status=active&status=error&host_id=" + id);
  ASSERT_NE(active_only.head().find("200 OK"), std::string::npos);
  const auto got = active_only.until([&](const auto& ev) { return has_status(ev, id, "active"); });
  using P = std::pair<std::string, std::string>;
  EXPECT_EQ(kinds_of(got, id), (std::vector<P>{P{"status", "active"}}));
}

/// A second `litterboxd serve` on the suite's database: another replica.
std::unique_ptr<litterboxd_process> replica(const std::string& database_url) {
  litterboxd_options o;
  o.binary = LB_LITTERBOXD_PATH;
  o.database_url = database_url;
  o.service_tokens = {std::string(k_token)};
  o.args = default_args();
  return std::make_unique<litterboxd_process>(std::move(o));
}

TEST_F(events, AResumeOnTheOtherReplicaAndAfterItsRestartGetsEveryEventExactlyOnce) {
  auto other = replica(database_url());
  sse_client on_a(process().port(), "/events");
  ASSERT_NE(on_a.head().find("200 OK"), std::string::npos);
  on_a.until([&](const auto&) { return !on_a.comments().empty(); });

  // Created through the other replica: this one's stream learns of it through NOTIFY.
  const auto created = http_client("127.0.0.1", other->port()).post("/hosts", "{}", {bearer()});
  ASSERT_EQ(created.status, 201) << created;
  const std::string id = body_json(created)["id"];
  const auto first_two = on_a.until([&](const auto& ev) { return kinds_of(ev, id).size() >= 2; });
  ASSERT_GE(first_two.size(), 2U);
  const auto seen_until = first_two[1].id;

  // The client drops and resumes on the other replica.
  std::vector<sse_event> resumed_events;
  {
    sse_client on_b(other->port(), "/events?host_id=" + id,
                    {"Last-Event-ID: " + std::to_string(seen_until)});
    ASSERT_NE(on_b.head().find("200 OK"), std::string::npos);
    resumed_events = on_b.until([&](const auto& ev) { return has_status(ev, id, "active"); });
  }
  using P = std::pair<std::string, std::string>;
  EXPECT_EQ(kinds_of(resumed_events, id),
            (std::vector<P>{P{"status", "creating_vm"}, P{"status", "bootstrapping"},
                            P{"status", "active"}}));
  ASSERT_FALSE(resumed_events.empty());
  EXPECT_GT(resumed_events.front().id, seen_until);

  // That replica restarts; the client resumes there again and sees the delete, once.
  const auto last = resumed_events.back().id;
  other->stop();
  other = replica(database_url());
  ASSERT_EQ(call("DELETE", "/hosts/" + id).status, 204);
  sse_client after_restart(other->port(), "/hosts/" + id + "/events",
                           {"Last-Event-ID: " + std::to_string(last)});
  ASSERT_NE(after_restart.head().find("200 OK"), std::string::npos);
  const auto tail = after_restart.until(
      [&](const auto& ev) { return !ev.empty() && ev.back().data["type"] == "deleted"; });
  EXPECT_EQ(kinds_of(tail, id),
            (std::vector<P>{P{"status", "deleting"}, P{"deleted", "deleting"}}));
}

TEST_F(events, BadResumePointsAndStatusesAre422AndAnUnknownHostIs404) {
  expect_validation(call("GET", "/events", {}, {{"Last-Event-ID", "soon"}}),
                    {"header", "Last-Event-ID"});
  expect_validation(get("/events?after=-1"), {"query", "after"});
  expect_validation(get("/events?status=sleeping"), {"query", "status"});
  expect_error(get("/hosts/" + std::string(k_unknown_id) + "/events"), 404, "host not found",
               "NOT_FOUND");
  const auto unauthenticated = call("GET", "/events", {}, {}, false);
  EXPECT_EQ(unauthenticated.status, 401);
}

}  // namespace
}  // namespace litterbox::test::api
