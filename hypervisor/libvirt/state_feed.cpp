#include "hypervisor/libvirt/state_feed.hpp"

#include "hypervisor/errc.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

namespace litterbox::hypervisor {
namespace fs = std::filesystem;
namespace {

// A large pipe buffer lets QEMU read in big gulps while the feeder refills.
constexpr int k_pipe_bytes = 1 << 20;
constexpr int k_poll_ms = 50;

}  // namespace

result<std::unique_ptr<state_feed>> state_feed::start(const fs::path& fifo, std::string head,
                                                      const fs::path& stream,
                                                      std::uint64_t stream_offset) {
  const int stream_fd = ::open(stream.c_str(), O_RDONLY | O_CLOEXEC);
  if (stream_fd < 0) {
    return make_error(errc::template_missing, "the template's state file cannot be opened: " +
                                                  std::string(std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(stream_fd, &st) != 0 || static_cast<std::uint64_t>(st.st_size) < stream_offset) {
    ::close(stream_fd);
    return make_error(errc::template_missing, "the template's state file is truncated");
  }
  std::error_code ec;
  fs::remove(fifo, ec);
  if (::mkfifo(fifo.c_str(), 0600) != 0) {
    const int err = errno;
    ::close(stream_fd);
    return make_error(errc::vm_create_failed,
                      "cannot make the restore FIFO: " + std::string(std::strerror(err)));
  }
  const int fifo_fd = ::open(fifo.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fifo_fd < 0) {
    const int err = errno;
    ::close(stream_fd);
    fs::remove(fifo, ec);
    return make_error(errc::vm_create_failed,
                      "cannot open the restore FIFO: " + std::string(std::strerror(err)));
  }
  (void)::fcntl(fifo_fd, F_SETPIPE_SZ, k_pipe_bytes);
  return std::unique_ptr<state_feed>(new state_feed(fifo, fifo_fd, stream_fd, std::move(head),
                                                    stream_offset,
                                                    static_cast<std::uint64_t>(st.st_size)));
}

state_feed::state_feed(fs::path fifo, int fifo_fd, int stream_fd, std::string head,
                       std::uint64_t stream_offset, std::uint64_t stream_end)
    : fifo_(std::move(fifo)),
      fifo_fd_(fifo_fd),
      stream_fd_(stream_fd),
      head_(std::move(head)),
      offset_(stream_offset),
      end_(stream_end) {
  thread_ = std::thread([this] { run(); });
}

void state_feed::run() {
  // Waits until the pipe has room; false when told to stop.
  auto writable = [this] {
    while (!stop_.load()) {
      pollfd p{fifo_fd_, POLLOUT, 0};
      if (::poll(&p, 1, k_poll_ms) > 0) {
        return true;
      }
    }
    return false;
  };
  std::size_t head_done = 0;
  while (head_done < head_.size()) {
    const ssize_t n = ::write(fifo_fd_, head_.data() + head_done, head_.size() - head_done);
    if (n > 0) {
      head_done += static_cast<std::size_t>(n);
    } else if ((n < 0 && errno != EAGAIN && errno != EINTR) || !writable()) {
      return;
    }
  }
  auto off = static_cast<loff_t>(offset_);
  while (static_cast<std::uint64_t>(off) < end_) {
    const auto want = static_cast<std::size_t>(
        std::min<std::uint64_t>(end_ - static_cast<std::uint64_t>(off), k_pipe_bytes));
    const ssize_t n =
        ::splice(stream_fd_, &off, fifo_fd_, nullptr, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      continue;
    }
    if (n == 0 || (errno != EAGAIN && errno != EINTR) || !writable()) {
      return;
    }
  }
  complete_.store(true);
}

void state_feed::stop() {
  stop_.store(true);
  if (thread_.joinable()) {
    thread_.join();
  }
  if (fifo_fd_ >= 0) {
    ::close(fifo_fd_);
    fifo_fd_ = -1;
  }
  if (stream_fd_ >= 0) {
    ::close(stream_fd_);
    stream_fd_ = -1;
  }
  std::error_code ec;
  fs::remove(fifo_, ec);
}

state_feed::~state_feed() {
  stop();
}

}  // namespace litterbox::hypervisor
