#pragma once

#include <optional>
#include <string>

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

/// `litterboxd node ls | cordon | uncordon | drain | set`: the operator's view of the
/// hypervisor nodes (issue 14) in the database. Nodes register themselves when `serve`
/// starts on them; these commands read and steer placement.
struct node_command {
  std::string database_url;
  std::string action;  ///< which subcommand was parsed
  std::string node;    ///< id or libvirt URI
  bool delete_hosts = false;
  int wait_seconds = 0;
  std::optional<int> reserved_cpus;
  std::optional<long long> reserved_memory_mib;
  std::optional<double> cpu_overcommit;
  std::optional<double> memory_overcommit;
};

/// Adds the `node` subcommand to `app`, filling `cmd`; returns it.
CLI::App* add_node_command(CLI::App& app, node_command& cmd);

/// Runs the parsed `cmd` against `db`, printing to stdout; the exit status.
int run_node_command(const node_command& cmd, controlplane::store& db, const clock& clk);

}  // namespace litterbox::litterboxd
