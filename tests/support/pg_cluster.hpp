#pragma once

#include <string>
#include <vector>

namespace litterbox::test {

/// A private PostgreSQL 15 cluster for tests that stop and start the database under a running
/// service: initdb'd into a fresh temp dir, served on a free loopback port (trust auth), and
/// removed when destroyed. Runs initdb/pg_ctl as `postgres` when the test runs as root. Throws
/// std::runtime_error when a step fails (a test cannot go on without it).
class test_cluster {
 public:
  test_cluster();
  test_cluster(const test_cluster&) = delete;
  test_cluster& operator=(const test_cluster&) = delete;
  ~test_cluster();

  /// Starts the server and waits until it accepts connections; the port stays the same
  /// across stop()/start().
  void start();
  /// Stops the server (fast mode: open sessions are terminated) and waits until it is gone.
  void stop();
  bool running() const { return running_; }

  /// Admin URL (superuser `postgres`, database `postgres`).
  std::string url() const;
  int port() const { return port_; }

 private:
  void run(const std::vector<std::string>& argv) const;

  std::string dir_;
  int port_ = 0;
  bool running_ = false;
};

}  // namespace litterbox::test
