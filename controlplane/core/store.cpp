#include "controlplane/core/store.hpp"

#include "controlplane/core/errc.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>

namespace litterbox::controlplane {

std::string_view to_string(create_path p) {
  switch (p) {
    case create_path::pool:
      return "pool";
    case create_path::clone:
      return "clone";
    case create_path::boot:
      return "boot";
  }
  return "boot";
}

std::optional<create_path> create_path_from(std::string_view text) {
  for (auto p : {create_path::pool, create_path::clone, create_path::boot}) {
    if (text == to_string(p)) {
      return p;
    }
  }
  return std::nullopt;
}

std::string_view to_string(template_status s) {
  switch (s) {
    case template_status::building:
      return "building";
    case template_status::ready:
      return "ready";
    case template_status::failed:
      return "failed";
  }
  return "failed";
}

std::string_view to_string(event_type t) {
  switch (t) {
    case event_type::created:
      return "created";
    case event_type::status:
      return "status";
    case event_type::deleted:
      return "deleted";
    case event_type::died:
      return "died";
  }
  return "status";
}

std::optional<event_type> event_type_from(std::string_view text) {
  for (auto t : {event_type::created, event_type::status, event_type::deleted, event_type::died}) {
    if (text == to_string(t)) {
      return t;
    }
  }
  return std::nullopt;
}

std::string_view to_string(node_state s) {
  switch (s) {
    case node_state::active:
      return "active";
    case node_state::cordoned:
      return "cordoned";
    case node_state::draining:
      return "draining";
  }
  return "cordoned";
}

std::optional<node_state> node_state_from(std::string_view text) {
  for (auto s : {node_state::active, node_state::cordoned, node_state::draining}) {
    if (text == to_string(s)) {
      return s;
    }
  }
  return std::nullopt;
}

std::int64_t node_record::cpu_capacity() const {
  return static_cast<std::int64_t>(std::floor(cpus * cpu_overcommit)) - reserved_cpus;
}

std::int64_t node_record::memory_capacity() const {
  return static_cast<std::int64_t>(
             std::floor(static_cast<double>(memory_mib) * memory_overcommit)) -
         reserved_memory_mib;
}

std::optional<error> node_refusal(const node_record& n, int cpus, int memory_mib) {
  if (n.state != node_state::active) {
    return make_error(errc::capacity, "node " + n.uri + " is " + std::string(to_string(n.state)) +
                                          ": it takes no new hosts");
  }
  const std::int64_t free_cpus = n.cpu_capacity() - n.used_cpus;
  const std::int64_t free_memory = n.memory_capacity() - n.used_memory_mib;
  if (cpus <= free_cpus && memory_mib <= free_memory) {
    return std::nullopt;
  }
  return make_error(errc::capacity,
                    "node " + n.uri + " has no room for " + std::to_string(cpus) + " vCPUs and " +
                        std::to_string(memory_mib) + " MiB (" +
                        std::to_string(std::max<std::int64_t>(free_cpus, 0)) + " vCPUs and " +
                        std::to_string(std::max<std::int64_t>(free_memory, 0)) + " MiB free)");
}

result<node_record> choose_node(const std::vector<node_record>& candidates,
                                const std::optional<std::string>& prefer, int cpus,
                                int memory_mib) {
  const node_record* best = nullptr;
  std::string refusals;
  for (const auto& n : candidates) {
    if (auto no = node_refusal(n, cpus, memory_mib)) {
      refusals += (refusals.empty() ? "" : "; ") + no->message;
      continue;
    }
    if (prefer && n.id == *prefer) {
      return n;
    }
    const auto room = [](const node_record& r) {
      return std::make_tuple(r.memory_capacity() - r.used_memory_mib,
                             r.cpu_capacity() - r.used_cpus);
    };
    if (best == nullptr || room(n) > room(*best) || (room(n) == room(*best) && n.id < best->id)) {
      best = &n;
    }
  }
  if (best != nullptr) {
    return *best;
  }
  if (candidates.empty()) {
    return make_error(errc::capacity, "no node takes hosts");
  }
  return make_error(errc::capacity, refusals);
}

std::optional<error> invalid_node_settings(const node_settings& s) {
  if ((s.reserved_cpus && *s.reserved_cpus < 0) ||
      (s.reserved_memory_mib && *s.reserved_memory_mib < 0)) {
    return make_error(errc::validation, "a node's reservations cannot be negative");
  }
  if ((s.cpu_overcommit && !(*s.cpu_overcommit > 0)) ||
      (s.memory_overcommit && !(*s.memory_overcommit > 0))) {
    return make_error(errc::validation, "a node's overcommit must be a positive number");
  }
  return std::nullopt;
}

}  // namespace litterbox::controlplane
