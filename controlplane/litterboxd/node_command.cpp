#include "controlplane/litterboxd/node_command.hpp"

#include "base/clock.hpp"
#include "base/time.hpp"
#include "controlplane/core/store.hpp"

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>

namespace litterbox::litterboxd {
namespace {

using controlplane::node_record;
using controlplane::node_state;

void print_nodes(const std::vector<node_record>& nodes) {
  std::printf("%-36s  %-24s  %-8s  %5s  %9s  %13s  %-15s  %s\n", "ID", "URI", "STATE", "HOSTS",
              "VCPUS", "MEMORY_MIB", "SSH_HOST", "LAST_SEEN");
  for (const auto& n : nodes) {
    const std::string cpus = std::to_string(n.used_cpus) + "/" + std::to_string(n.cpu_capacity());
    const std::string memory =
        std::to_string(n.used_memory_mib) + "/" + std::to_string(n.memory_capacity());
    std::printf("%-36s  %-24s  %-8s  %5lld  %9s  %13s  %-15s  %s\n", n.id.c_str(), n.uri.c_str(),
                std::string(to_string(n.state)).c_str(), static_cast<long long>(n.hosts),
                cpus.c_str(), memory.c_str(), n.ssh_host.c_str(),
                format_rfc3339(n.last_seen_at).c_str());
  }
  for (const auto& n : nodes) {
    std::printf(
        "%s: %d CPUs and %lld MiB reported; %d vCPUs and %lld MiB reserved; overcommit "
        "vCPUs x%g, memory x%g\n",
        n.uri.c_str(), n.cpus, static_cast<long long>(n.memory_mib), n.reserved_cpus,
        static_cast<long long>(n.reserved_memory_mib), n.cpu_overcommit, n.memory_overcommit);
  }
}

int fail(const error& e) {
  std::fprintf(stderr, "litterboxd node: %s\n", e.message.c_str());
  return 1;
}

// Waits until node `id` holds no host that is not in error, or `seconds` have passed. With
// `expire`, hosts that became active meanwhile (creates that were in progress) are expired
// too.
int wait_empty(controlplane::store& db, const clock& clk, const std::string& id, int seconds,
               bool expire) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  for (;;) {
    if (expire) {
      if (auto e = db.expire_node_hosts(id, clk.now()); !e) {
        return fail(e.error());
      }
    }
    auto nodes = db.list_nodes();
    if (!nodes) {
      return fail(nodes.error());
    }
    std::int64_t left = 0;
    for (const auto& n : *nodes) {
      left += n.id == id ? n.hosts : 0;
    }
    if (left == 0) {
      std::printf("the node holds no hosts\n");
      return 0;
    }
    if (std::chrono::steady_clock::now() >= until) {
      std::fprintf(stderr, "litterboxd node: %lld hosts still on the node after %d s\n",
                   static_cast<long long>(left), seconds);
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

}  // namespace

CLI::App* add_node_command(CLI::App& app, node_command& cmd) {
  auto* node = app.add_subcommand(
      "node", "List the hypervisor nodes and steer placement (cordon, drain, capacity)");
  node->require_subcommand(1);
  node->add_option("--database-url", cmd.database_url, "PostgreSQL connection URL")
      ->envname("DATABASE_URL");
  auto* add = node->add_subcommand(
      "add", "Record the node at a libvirt URI; serving replicas place hosts on it from then on");
  add->add_option("uri", cmd.node, "The node's libvirt URI")->required();
  add->add_option("--ssh-host", cmd.ssh_host,
                  "The address callers reach the node's SSH forwards at")
      ->required();
  auto* rm = node->add_subcommand("rm", "Forget a node that holds no hosts (drain it first)");
  rm->add_option("node", cmd.node, "The node's id or libvirt URI")->required();
  auto* ls = node->add_subcommand("ls", "Every node: state, hosts, vCPUs and memory used/free");
  auto* cordon = node->add_subcommand("cordon", "Place no new hosts on the node");
  auto* uncordon = node->add_subcommand("uncordon", "Place new hosts on the node again");
  auto* drain = node->add_subcommand(
      "drain", "Place no new hosts on the node; optionally delete its hosts and wait for it");
  auto* set = node->add_subcommand("set", "Change the node's reservations and overcommit");
  for (auto* sub : {cordon, uncordon, drain, set}) {
    sub->add_option("node", cmd.node, "The node's id or libvirt URI")->required();
  }
  drain->add_flag("--delete-hosts", cmd.delete_hosts,
                  "Expire every host on the node now, so that the reaper deletes each");
  drain
      ->add_option("--wait", cmd.wait_seconds,
                   "Wait up to this many seconds until the node holds no hosts (exit 1 if not)")
      ->check(CLI::NonNegativeNumber);
  set->add_option("--reserved-cpus", cmd.reserved_cpus, "vCPUs kept from guests");
  set->add_option("--reserved-memory-mib", cmd.reserved_memory_mib, "Memory kept from guests");
  set->add_option("--cpu-overcommit", cmd.cpu_overcommit, "vCPUs per CPU the node reports");
  set->add_option("--memory-overcommit", cmd.memory_overcommit,
                  "Guest memory per MiB the node reports");
  for (auto* sub : {add, rm, ls, cordon, uncordon, drain, set}) {
    sub->fallthrough();  // --database-url may come after the action too
    sub->parse_complete_callback([&cmd, sub] { cmd.action = sub->get_name(); });
  }
  return node;
}

int run_node_command(const node_command& cmd, controlplane::store& db, const clock& clk,
                     const node_asker& ask) {
  if (cmd.action == "add") {
    auto info = ask(cmd.node);
    if (!info) {
      return fail(info.error());
    }
    auto n = db.register_node({cmd.node, cmd.ssh_host, info->cpus, info->memory_mib}, clk.now());
    if (!n) {
      return fail(n.error());
    }
    print_nodes({*n});
    return 0;
  }
  if (cmd.action == "rm") {
    auto n = db.remove_node(cmd.node);
    if (!n) {
      return fail(n.error());
    }
    std::printf("node %s (%s) removed\n", n->uri.c_str(), n->id.c_str());
    return 0;
  }
  if (cmd.action == "ls") {
    auto nodes = db.list_nodes();
    if (!nodes) {
      return fail(nodes.error());
    }
    print_nodes(*nodes);
    return 0;
  }
  if (cmd.action == "set") {
    controlplane::node_settings s;
    s.reserved_cpus = cmd.reserved_cpus;
    s.reserved_memory_mib = cmd.reserved_memory_mib;
    s.cpu_overcommit = cmd.cpu_overcommit;
    s.memory_overcommit = cmd.memory_overcommit;
    auto n = db.configure_node(cmd.node, s, clk.now());
    if (!n) {
      return fail(n.error());
    }
    print_nodes({*n});
    return 0;
  }
  const node_state state = cmd.action == "uncordon" ? node_state::active
                           : cmd.action == "drain"  ? node_state::draining
                                                    : node_state::cordoned;
  auto n = db.set_node_state(cmd.node, state, clk.now());
  if (!n) {
    return fail(n.error());
  }
  print_nodes({*n});
  if (cmd.action != "drain") {
    return 0;
  }
  if (cmd.delete_hosts) {
    auto expired = db.expire_node_hosts(n->id, clk.now());
    if (!expired) {
      return fail(expired.error());
    }
    std::printf("%d hosts expire now; the reaper of a serving litterboxd deletes them\n", *expired);
  }
  return cmd.wait_seconds > 0 ? wait_empty(db, clk, n->id, cmd.wait_seconds, cmd.delete_hosts) : 0;
}

}  // namespace litterbox::litterboxd
