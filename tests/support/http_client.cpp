#include "tests/support/http_client.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdexcept>
#include <sys/socket.h>
#include <unistd.h>

namespace litterbox::test {
namespace {

using steady = std::chrono::steady_clock;

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           const auto lx = (x >= 'A' && x <= 'Z') ? static_cast<char>(x - 'A' + 'a') : x;
           const auto ly = (y >= 'A' && y <= 'Z') ? static_cast<char>(y - 'A' + 'a') : y;
           return lx == ly;
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

int poll_for(int fd, short events, steady::time_point deadline) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now());
    if (left.count() <= 0) {
      return 0;
    }
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    return n;
  }
}

std::string errno_text(const char* what) {
  return std::string(what) + ": " + std::strerror(errno);
}

}  // namespace

std::optional<std::string> http_response::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (iequals(k, name)) {
      return v;
    }
  }
  return std::nullopt;
}

std::vector<std::string> http_response::header_values(std::string_view name) const {
  std::vector<std::string> out;
  for (const auto& [k, v] : headers) {
    if (iequals(k, name)) {
      out.push_back(v);
    }
  }
  return out;
}

std::ostream& operator<<(std::ostream& os, const http_response& r) {
  os << "HTTP " << r.status << ' ' << r.reason;
  if (!r.error.empty()) {
    os << " [transport error: " << r.error << ']';
  }
  os << '\n';
  for (const auto& [k, v] : r.headers) {
    os << k << ": " << v << '\n';
  }
  constexpr std::size_t k_max_shown = 4096;
  os << '\n' << r.body.substr(0, k_max_shown);
  if (r.body.size() > k_max_shown) {
    os << "… (" << r.body.size() << " bytes)";
  }
  return os;
}

http_connection::http_connection(std::string host, std::uint16_t port,
                                 std::chrono::milliseconds timeout)
    : timeout_(timeout) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) {
    error_ = errno_text("socket");
    return;
  }
  const int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    error_ = "not an IPv4 address: " + host;
    return;
  }
  // The socket API takes a sockaddr*; sockaddr_in is layout-compatible by definition.
  if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EINPROGRESS) {
      error_ = errno_text("connect");
      return;
    }
    if (poll_for(fd_, POLLOUT, steady::now() + timeout_) <= 0) {
      error_ = "connect timed out";
      return;
    }
    int so_error = 0;
    socklen_t len = sizeof so_error;
    ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &so_error, &len);
    if (so_error != 0) {
      error_ = std::string("connect: ") + std::strerror(so_error);
      return;
    }
  }
  connect_ok_ = true;
}

http_connection::~http_connection() {
  close();
}

void http_connection::close() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

bool http_connection::write(std::string_view bytes) {
  if (!connected()) {
    return false;
  }
  const auto deadline = steady::now() + timeout_;
  while (!bytes.empty()) {
    const auto n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n > 0) {
      bytes.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && errno == EAGAIN) {
      if (poll_for(fd_, POLLOUT, deadline) <= 0) {
        error_ = "write timed out";
        return false;
      }
      continue;
    }
    error_ = errno_text("send");
    return false;
  }
  return true;
}

long http_connection::fill(steady::time_point deadline) {
  if (fd_ < 0) {
    error_ = "not connected";
    return -1;
  }
  char chunk[16384];
  for (;;) {
    const auto n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n > 0) {
      buffer_.append(chunk, static_cast<std::size_t>(n));
      return n;
    }
    if (n == 0) {
      return 0;
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno == EAGAIN) {
      if (poll_for(fd_, POLLIN, deadline) <= 0) {
        error_ = "read timed out";
        return -1;
      }
      continue;
    }
    if (errno == ECONNRESET) {
      return 0;
    }
    error_ = errno_text("recv");
    return -1;
  }
}

http_response http_connection::read_response(bool head_request, bool stop_at_interim) {
  http_response r;
  if (!connected()) {
    r.error = error_.empty() ? "not connected" : error_;
    return r;
  }
  const auto deadline = steady::now() + timeout_;
  auto fail = [&](std::string why) {
    r.error = std::move(why);
    return r;
  };
  for (;;) {
    std::size_t head_end;
    while ((head_end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      const auto n = fill(deadline);
      if (n <= 0) {
        return fail(n == 0 ? "connection closed before the response head (got " +
                                 std::to_string(buffer_.size()) + " bytes)"
                           : error_);
      }
    }
    const std::string head = buffer_.substr(0, head_end);
    buffer_.erase(0, head_end + 4);
    std::string_view rest(head);
    const auto line_end = rest.find("\r\n");
    const auto status_line = rest.substr(0, line_end);
    rest = line_end == std::string_view::npos ? std::string_view{} : rest.substr(line_end + 2);
    // "HTTP/1.1 200 OK"
    if (status_line.substr(0, 5) != "HTTP/" || status_line.size() < 12) {
      return fail("bad status line: " + std::string(status_line));
    }
    const auto sp = status_line.find(' ');
    try {
      r.status = std::stoi(std::string(status_line.substr(sp + 1, 3)));
    } catch (const std::exception&) {
      return fail("bad status line: " + std::string(status_line));
    }
    r.reason = status_line.size() > sp + 5 ? std::string(status_line.substr(sp + 5)) : "";
    r.headers.clear();
    while (!rest.empty()) {
      const auto e = rest.find("\r\n");
      const auto line = rest.substr(0, e);
      rest = e == std::string_view::npos ? std::string_view{} : rest.substr(e + 2);
      const auto colon = line.find(':');
      if (colon == std::string_view::npos) {
        return fail("bad header line: " + std::string(line));
      }
      r.headers.emplace_back(std::string(line.substr(0, colon)),
                             std::string(trim(line.substr(colon + 1))));
    }
    // Interim responses (100 Continue) are followed by the real one.
    if (r.status >= 100 && r.status < 200 && r.status != 101) {
      if (stop_at_interim) {
        return r;
      }
      continue;
    }
    break;
  }
  if (head_request || r.status == 204 || r.status == 304) {
    return r;
  }
  const auto te = r.header("Transfer-Encoding");
  if (te && iequals(trim(*te), "chunked")) {
    for (;;) {
      std::size_t eol;
      while ((eol = buffer_.find("\r\n")) == std::string::npos) {
        if (fill(deadline) <= 0) {
          return fail("chunked body cut short");
        }
      }
      std::size_t size = 0;
      try {
        size = std::stoul(buffer_.substr(0, eol), nullptr, 16);
      } catch (const std::exception&) {
        return fail("bad chunk size");
      }
      buffer_.erase(0, eol + 2);
      if (size == 0) {
        // Trailers end with an empty line.
        for (;;) {
          while ((eol = buffer_.find("\r\n")) == std::string::npos) {
            if (fill(deadline) <= 0) {
              return fail("chunked trailer cut short");
            }
          }
          const bool empty = eol == 0;
          buffer_.erase(0, eol + 2);
          if (empty) {
            return r;
          }
        }
      }
      while (buffer_.size() < size + 2) {
        if (fill(deadline) <= 0) {
          return fail("chunk cut short");
        }
      }
      r.body.append(buffer_, 0, size);
      buffer_.erase(0, size + 2);
    }
  }
  if (const auto cl = r.header("Content-Length")) {
    std::size_t length = 0;
    try {
      length = std::stoul(*cl);
    } catch (const std::exception&) {
      return fail("bad Content-Length: " + *cl);
    }
    while (buffer_.size() < length) {
      const auto n = fill(deadline);
      if (n <= 0) {
        r.body = buffer_;
        buffer_.clear();
        return fail(n == 0 ? "connection closed inside the body" : error_);
      }
    }
    r.body = buffer_.substr(0, length);
    buffer_.erase(0, length);
    return r;
  }
  // No length: the body runs to the end of the connection.
  for (;;) {
    const auto n = fill(deadline);
    if (n == 0) {
      break;
    }
    if (n < 0) {
      r.body = buffer_;
      buffer_.clear();
      return fail(error_);
    }
  }
  r.body = buffer_;
  buffer_.clear();
  return r;
}

bool http_connection::wait_closed(std::chrono::milliseconds timeout, std::string* received) {
  const auto deadline = steady::now() + timeout;
  for (;;) {
    const auto before = buffer_.size();
    const auto n = fill(deadline);
    if (received != nullptr && buffer_.size() > before) {
      received->append(buffer_, before);
    }
    if (n == 0) {
      return true;
    }
    if (n < 0) {
      return false;
    }
  }
}

std::string serialize(const http_request& request, std::string_view host_header) {
  auto has = [&](std::string_view name) {
    return std::any_of(request.headers.begin(), request.headers.end(),
                       [&](const http_header& h) { return iequals(h.first, name); });
  };
  std::string out = request.method + " " + request.target + " HTTP/1.1\r\n";
  if (!has("Host")) {
    out += "Host: " + std::string(host_header) + "\r\n";
  }
  const bool body_method =
      request.method == "POST" || request.method == "PUT" || request.method == "PATCH";
  if (!has("Content-Length") && !has("Transfer-Encoding") &&
      (!request.body.empty() || body_method)) {
    out += "Content-Length: " + std::to_string(request.body.size()) + "\r\n";
  }
  if (!has("Connection")) {
    out += "Connection: close\r\n";
  }
  for (const auto& [k, v] : request.headers) {
    out += k + ": " + v + "\r\n";
  }
  out += "\r\n";
  out += request.body;
  return out;
}

http_client::http_client(std::string host, std::uint16_t port, std::chrono::milliseconds timeout)
    : host_(std::move(host)), port_(port), timeout_(timeout) {}

http_response http_client::send(const http_request& request) const {
  http_connection c(host_, port_, timeout_);
  // A server may answer (413) and close before it has read everything we send: read the
  // response even when the write failed.
  const bool written = c.write(serialize(request, host_ + ":" + std::to_string(port_)));
  auto r = c.read_response(request.method == "HEAD");
  if (!written && r.status == 0) {
    r.error = "write failed: " + r.error;
  }
  return r;
}

http_response http_client::send_raw(std::string_view raw) const {
  http_connection c(host_, port_, timeout_);
  const bool written = c.write(raw);
  auto r = c.read_response();
  if (!written && r.status == 0) {
    r.error = "write failed: " + r.error;
  }
  return r;
}

http_response http_client::get(std::string target, std::vector<http_header> headers) const {
  return send({"GET", std::move(target), std::move(headers), {}});
}

http_response http_client::post(std::string target, std::string body,
                                std::vector<http_header> headers) const {
  return send({"POST", std::move(target), std::move(headers), std::move(body)});
}

http_response http_client::del(std::string target, std::vector<http_header> headers) const {
  return send({"DELETE", std::move(target), std::move(headers), {}});
}

}  // namespace litterbox::test
