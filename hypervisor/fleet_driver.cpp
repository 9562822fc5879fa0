#include "hypervisor/fleet_driver.hpp"

#include "base/log.hpp"
#include "hypervisor/errc.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

namespace litterbox::hypervisor {

fleet_driver::fleet_driver(std::string home_id, std::string home_uri, std::shared_ptr<driver> home,
                           node_locator locate)
    : home_(std::move(home)), locate_(std::move(locate)) {
  members_.push_back({std::move(home_id), std::move(home_uri), home_});
}

void fleet_driver::add_node(std::string id, std::string uri, std::shared_ptr<driver> d) {
  std::function<void()> wake;
  {
    const std::lock_guard lock(mutex_);
    if (std::any_of(members_.begin(), members_.end(),
                    [&](const member& m) { return m.id == id; })) {
      return;
    }
    members_.push_back({std::move(id), std::move(uri), d});
    wake = wake_;
  }
  if (wake) {
    d->watch_vms(std::move(wake));
  }
}

bool fleet_driver::drives(std::string_view id) const {
  const std::lock_guard lock(mutex_);
  return std::any_of(members_.begin(), members_.end(), [&](const member& m) { return m.id == id; });
}

std::vector<fleet_driver::member> fleet_driver::members() const {
  const std::lock_guard lock(mutex_);
  return members_;
}

std::vector<std::string> fleet_driver::node_ids() const {
  std::vector<std::string> out;
  for (const auto& m : members()) {
    if (m.answering) {
      out.push_back(m.id);
    }
  }
  return out;
}

void fleet_driver::check_nodes() {
  for (const auto& m : members()) {
    auto info = m.d->node();  // not under mutex_: a node may take its timeout to answer
    const std::lock_guard lock(mutex_);
    for (auto& each : members_) {
      if (each.id != m.id || each.answering == static_cast<bool>(info)) {
        continue;
      }
      each.answering = static_cast<bool>(info);
      if (info) {
        spdlog::info("node {} ({}) answers again: creates are placed on it", m.uri, m.id);
      } else {
        spdlog::warn("node {} ({}) does not answer ({}): no creates are placed on it", m.uri, m.id,
                     log_escape(info.error().message));
      }
    }
  }
}

result<std::shared_ptr<driver>> fleet_driver::on(std::string_view node_id) const {
  const std::lock_guard lock(mutex_);
  if (node_id.empty()) {
    return home_;
  }
  for (const auto& m : members_) {
    if (m.id == node_id) {
      return m.d;
    }
  }
  return make_error(errc::unavailable,
                    "node " + std::string(node_id) + " is not driven by this control plane");
}

result<std::vector<fleet_driver::member>> fleet_driver::holders(std::string_view id) const {
  auto all = members();
  if (all.size() == 1) {
    return all;  // one node: nothing to look up
  }
  auto where = locate_(id);
  if (!where) {
    return make_error(errc::unavailable, "cannot tell which node holds " + std::string(id) + ": " +
                                             where.error().message);
  }
  if (!*where) {
    return all;
  }
  for (auto& m : all) {
    if (m.id == **where) {
      return std::vector<member>{std::move(m)};
    }
  }
  return make_error(errc::unavailable, "node " + **where + " is not driven by this control plane");
}

result<void> fleet_driver::on_holders(std::string_view id,
                                      const std::function<result<void>(driver&)>& op) const {
  auto targets = holders(id);
  if (!targets) {
    return targets.error();
  }
  std::optional<error> first;
  for (const auto& m : *targets) {
    if (auto done = op(*m.d); !done && !first) {
      first = done.error();
    }
  }
  if (first) {
    return *first;
  }
  return {};
}

result<std::string> fleet_driver::prepare_image(
    std::string_view image, std::optional<std::chrono::steady_clock::time_point> deadline) {
  return home_->prepare_image(image, deadline);
}

result<std::string> fleet_driver::resolve_image(std::string_view image) {
  return home_->resolve_image(image);
}

result<void> fleet_driver::create_vm(const vm_spec& spec) {
  auto d = on(spec.node_id);
  if (!d) {
    return d.error();
  }
  return (*d)->create_vm(spec);
}

result<void> fleet_driver::wait_ready(const vm_spec& spec,
                                      std::chrono::steady_clock::time_point deadline) {
  auto d = on(spec.node_id);
  if (!d) {
    return d.error();
  }
  return (*d)->wait_ready(spec, deadline);
}

result<void> fleet_driver::destroy(std::string_view host_id) {
  return on_holders(host_id, [&](driver& d) { return d.destroy(host_id); });
}

result<std::string> fleet_driver::console(std::string_view host_id, std::size_t max_bytes) {
  auto targets = holders(host_id);
  if (!targets) {
    return targets.error();
  }
  std::optional<error> last;
  for (const auto& m : *targets) {
    auto text = m.d->console(host_id, max_bytes);
    if (text) {
      return text;
    }
    last = text.error();
  }
  if (last) {
    return *last;
  }
  return make_error(errc::not_found, "no console");
}

namespace {

// The union of `ask` over every member; an error only when no member answered.
template <class Members, class Ask>
result<std::vector<std::string>> union_of(const Members& all, Ask ask) {
  std::vector<std::string> out;
  std::optional<error> last;
  bool any = false;
  for (const auto& m : all) {
    auto ids = ask(*m.d);
    if (!ids) {
      last = ids.error();
      continue;
    }
    any = true;
    out.insert(out.end(), ids->begin(), ids->end());
  }
  if (!any && last) {
    return *last;
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace

result<std::vector<std::string>> fleet_driver::list_owned() {
  return union_of(members(), [](driver& d) { return d.list_owned(); });
}

result<std::vector<std::string>> fleet_driver::list_templates() {
  return union_of(members(), [](driver& d) { return d.list_templates(); });
}

result<int> fleet_driver::collect_images(const std::set<std::string>& in_use) {
  // Each node keeps its own copies of the bases; each collects its own.
  int removed = 0;
  std::optional<error> first;
  for (const auto& m : members()) {
    auto n = m.d->collect_images(in_use);
    if (n) {
      removed += *n;
    } else if (!first) {
      first = n.error();
    }
  }
  if (first && removed == 0) {
    return *first;
  }
  return removed;
}

namespace {

// What tells a further node's checks apart in their names (names stay [a-z0-9_]): the last
// eight hex digits of its id, the random part of a UUIDv7.
std::string check_suffix(const std::string& node_id) {
  std::string hex;
  for (char c : node_id) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')) {
      hex += c;
    } else if (c >= 'A' && c <= 'Z') {
      hex += static_cast<char>(c - 'A' + 'a');
    }
  }
  return hex.size() > 8 ? hex.substr(hex.size() - 8) : hex;
}

}  // namespace

std::vector<check_result> fleet_driver::doctor() {
  std::vector<check_result> out;
  bool home = true;
  for (const auto& m : members()) {
    for (auto& c : m.d->doctor()) {
      if (!home) {
        c.name += "_" + check_suffix(m.id);
        c.detail = m.uri + ": " + c.detail;
      }
      out.push_back(std::move(c));
    }
    home = false;
  }
  return out;
}

result<void> fleet_driver::build_template(const template_spec& spec,
                                          std::chrono::steady_clock::time_point deadline) {
  auto d = on(spec.guest.node_id);
  if (!d) {
    return d.error();
  }
  return (*d)->build_template(spec, deadline);
}

result<void> fleet_driver::restore_clone(std::string_view template_id, const vm_spec& spec,
                                         std::chrono::steady_clock::time_point deadline) {
  auto d = on(spec.node_id);
  if (!d) {
    return d.error();
  }
  return (*d)->restore_clone(template_id, spec, deadline);
}

result<void> fleet_driver::apply_login(const vm_spec& spec,
                                       std::chrono::steady_clock::time_point deadline) {
  auto d = on(spec.node_id);
  if (!d) {
    return d.error();
  }
  return (*d)->apply_login(spec, deadline);
}

result<void> fleet_driver::destroy_template(std::string_view template_id) {
  return on_holders(template_id, [&](driver& d) { return d.destroy_template(template_id); });
}

result<std::map<std::string, vm_status>> fleet_driver::vm_states() {
  std::map<std::string, vm_status> out;
  for (const auto& m : members()) {
    auto states = m.d->vm_states();
    if (!states) {
      return make_error(states.error().code, "node " + m.uri + ": " + states.error().message);
    }
    out.merge(*states);
  }
  return out;
}

void fleet_driver::watch_vms(std::function<void()> wake) {
  std::vector<member> all;
  {
    const std::lock_guard lock(mutex_);
    wake_ = wake;
    all = members_;
  }
  for (const auto& m : all) {
    m.d->watch_vms(wake);
  }
}

}  // namespace litterbox::hypervisor
