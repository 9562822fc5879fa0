#pragma once

#include "base/result.hpp"
#include "hypervisor/driver.hpp"

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace CLI {
class App;
}

namespace litterbox {
class clock;
}

namespace litterbox::controlplane {
class store;
}

namespace litterbox::litterboxd {

/// `litterboxd node add | rm | ls | cordon | uncordon | drain | set`: the operator's view of
/// the hypervisor nodes (issue 14) in the database. The machine `serve` runs on registers
/// itself when it starts; `add` records another one, which every serving replica that can
/// drive it picks up; the rest read and steer placement.
struct node_command {
  std::string database_url;
  std::string action;    ///< which subcommand was parsed
  std::string node;      ///< id or libvirt URI (add: the URI)
  std::string ssh_host;  ///< add: where callers reach the node's SSH forwards
  bool delete_hosts = false;
  int wait_seconds = 0;
  std::optional<int> reserved_cpus;
  std::optional<long long> reserved_memory_mib;
  std::optional<double> cpu_overcommit;
  std::optional<double> memory_overcommit;
};

/// Adds the `node` subcommand to `app`, filling `cmd`; returns it.
CLI::App* add_node_command(CLI::App& app, node_command& cmd);

/// Asks the node at a URI what it is (for `add`). Errors: validation (a URI this build
/// cannot drive), unavailable (it does not answer).
using node_asker = std::function<result<hypervisor::node_info>(std::string_view uri)>;

/// Runs the parsed `cmd` against `db`, printing to stdout; the exit status.
int run_node_command(const node_command& cmd, controlplane::store& db, const clock& clk,
                     const node_asker& ask);

}  // namespace litterbox::litterboxd
