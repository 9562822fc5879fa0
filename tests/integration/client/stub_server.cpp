#include "tests/integration/client/stub_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdexcept>
#include <sys/socket.h>
#include <unistd.h>

namespace litterbox::client::test {
namespace {

std::string reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

void send_all(int fd, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const auto n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) {
      return;
    }
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace

stub_server::stub_server(std::deque<stub_answer> script) : script_(std::move(script)) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listen_fd_, 16) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("stub server cannot listen");
  }
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { serve(); });
}

stub_server::~stub_server() {
  ::shutdown(listen_fd_, SHUT_RDWR);
  ::close(listen_fd_);
  thread_.join();
}

std::vector<std::map<std::string, std::string>> stub_server::requests() const {
  const std::lock_guard lock(mutex_);
  return requests_;
}

std::vector<std::string> stub_server::bodies() const {
  const std::lock_guard lock(mutex_);
  return bodies_;
}

void stub_server::serve() {
  for (;;) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      return;  // shut down
    }
    std::string in;
    char buf[4096];
    std::size_t header_end = std::string::npos;
    std::size_t content_length = 0;
    while (true) {
      const auto n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) {
        break;
      }
      in.append(buf, static_cast<std::size_t>(n));
      if (header_end == std::string::npos) {
        header_end = in.find("\r\n\r\n");
        if (header_end != std::string::npos) {
          std::map<std::string, std::string> headers;
          headers[":request"] = in.substr(0, in.find("\r\n"));
          std::size_t pos = in.find("\r\n") + 2;
          while (pos < header_end) {
            const auto eol = in.find("\r\n", pos);
            const auto line = in.substr(pos, eol - pos);
            const auto colon = line.find(':');
            if (colon != std::string::npos) {
              std::string name = line.substr(0, colon);
              for (auto& c : name) {
                c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
              }
              headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
            }
            pos = eol + 2;
          }
          if (const auto it = headers.find("content-length"); it != headers.end()) {
            content_length = std::stoul(it->second);
          }
          const std::lock_guard lock(mutex_);
          requests_.push_back(std::move(headers));
        }
      }
      if (header_end != std::string::npos && in.size() >= header_end + 4 + content_length) {
        const std::lock_guard lock(mutex_);
        bodies_.push_back(in.substr(header_end + 4, content_length));
        break;
      }
    }
    stub_answer answer{503, R"({"detail":"script exhausted","error_code":"UNAVAILABLE"})", false};
    {
      const std::lock_guard lock(mutex_);
      if (!script_.empty()) {
        answer = std::move(script_.front());
        script_.pop_front();
      }
    }
    if (!answer.close_only) {
      std::string extra;
      for (const auto& [name, value] : answer.headers) {
        extra += name + ": " + value + "\r\n";
      }
      send_all(fd, "HTTP/1.1 " + std::to_string(answer.status) + " " + reason(answer.status) +
                       "\r\n" + extra + "Content-Type: application/json\r\nContent-Length: " +
                       std::to_string(answer.body.size()) + "\r\nConnection: close\r\n\r\n" +
                       answer.body);
    }
    ::close(fd);
  }
}

}  // namespace litterbox::client::test
