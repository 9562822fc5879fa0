#pragma once

#include "base/result.hpp"

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

namespace litterbox::hypervisor {

/// A clone's save image, made on the fly: `head` (header and domain XML naming the clone)
/// followed by the template's migration stream (`stream` from `stream_offset` to its end),
/// fed through a FIFO at `fifo` that libvirt opens as the file to restore from. Nothing is
/// copied to disk: the stream goes from the template's file (page cache) through a pipe to
/// QEMU. The FIFO is opened read-write here, so libvirt's open never blocks and a reader that
/// goes away leaves the feeder waiting instead of failing with SIGPIPE; stop() ends it.
class state_feed {
 public:
  /// Makes the FIFO (mode 0600) and starts feeding it. Errors: vm_create_failed,
  /// template_missing (the template's state file cannot be opened).
  static result<std::unique_ptr<state_feed>> start(const std::filesystem::path& fifo,
                                                   std::string head,
                                                   const std::filesystem::path& stream,
                                                   std::uint64_t stream_offset);
  /// Stops feeding, closes and removes the FIFO. Idempotent.
  void stop();
  /// The FIFO's path, to hand to virDomainRestoreFlags.
  const std::filesystem::path& fifo() const { return fifo_; }
  /// True once every byte was handed to the pipe.
  bool complete() const { return complete_.load(); }
  ~state_feed();
  state_feed(const state_feed&) = delete;
  state_feed& operator=(const state_feed&) = delete;

 private:
  state_feed(std::filesystem::path fifo, int fifo_fd, int stream_fd, std::string head,
             std::uint64_t stream_offset, std::uint64_t stream_end);
  void run();

  std::filesystem::path fifo_;
  int fifo_fd_;
  int stream_fd_;
  std::string head_;
  std::uint64_t offset_;
  std::uint64_t end_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> complete_{false};
  std::thread thread_;
};

}  // namespace litterbox::hypervisor
