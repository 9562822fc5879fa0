#pragma once

#include "hypervisor/driver.hpp"

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace litterbox::hypervisor {

/// The node a host or template id lives on, as the database records it: its node id, or
/// nullopt when no row names the id (an orphan a sweep found). An error when the database
/// cannot say.
using node_locator = std::function<result<std::optional<std::string>>(std::string_view id)>;

/// Several hypervisor nodes behind the one driver interface the control plane uses (issue
/// 14). A call about a spec goes to the node its node_id names; a call about an id goes to
/// the node `locate` says holds it (an id no row names goes to every node, which is what a
/// sweep of orphans wants); questions about everything (vm_states, list_owned, …) ask every
/// node. Images are resolved and pulled on the home node, the one this process runs on:
/// another node's driver makes a base available there itself when it creates a guest.
///
/// With one node this is that node's driver, call for call: nothing is located. Nodes can be
/// added while it is in use. Thread-safe.
class fleet_driver final : public driver {
 public:
  fleet_driver(std::string home_id, std::string home_uri, std::shared_ptr<driver> home,
               node_locator locate);

  /// Drives node `id` (at `uri`) with `d` from now on; its VMs are watched like the others'.
  /// A node already driven keeps its driver.
  void add_node(std::string id, std::string uri, std::shared_ptr<driver> d);
  /// Whether node `id` is driven.
  bool drives(std::string_view id) const;
  /// Asks every node what it is (driver::node(), which each driver time-boxes). A node that
  /// does not answer is left out of node_ids() until it answers again, so that creates go
  /// to the others; everything else still reaches it (its hosts are still its own).
  /// Transitions are logged. Call it periodically (serve's node follower does, every 5 s).
  void check_nodes();

  std::string_view provider() const override { return home_->provider(); }
  result<std::string> prepare_image(
      std::string_view image,
      std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt) override;
  result<std::string> resolve_image(std::string_view image) override;
  result<void> create_vm(const vm_spec& spec) override;
  result<void> wait_ready(const vm_spec& spec,
                          std::chrono::steady_clock::time_point deadline) override;
  result<void> destroy(std::string_view host_id) override;
  result<std::string> console(std::string_view host_id, std::size_t max_bytes) override;
  /// Every node's that answers; an error only when none does. A node that does not answer
  /// hides its leftovers from a sweep, which is the safe direction.
  result<std::vector<std::string>> list_owned() override;
  result<int> collect_images(const std::set<std::string>& in_use) override;
  /// The home node's checks, then each other node's: its name followed by "_" and the last
  /// eight hex digits of the node's id, its detail preceded by the node's URI.
  std::vector<check_result> doctor() override;
  result<node_info> node() override { return home_->node(); }
  /// The nodes that answered the last check_nodes() (all of them before the first).
  std::vector<std::string> node_ids() const override;
  std::optional<std::uint64_t> known_image_bytes(std::string_view image) override {
    return home_->known_image_bytes(image);
  }
  result<void> build_template(const template_spec& spec,
                              std::chrono::steady_clock::time_point deadline) override;
  result<void> restore_clone(std::string_view template_id, const vm_spec& spec,
                             std::chrono::steady_clock::time_point deadline) override;
  result<void> apply_login(const vm_spec& spec,
                           std::chrono::steady_clock::time_point deadline) override;
  result<void> destroy_template(std::string_view template_id) override;
  /// As list_owned.
  result<std::vector<std::string>> list_templates() override;
  /// Every node's VMs; an error when any node does not answer, because a VM missing from
  /// the answer is taken for gone and its host failed.
  result<std::map<std::string, vm_status>> vm_states() override;
  void watch_vms(std::function<void()> wake) override;

 private:
  struct member {
    std::string id;
    std::string uri;
    std::shared_ptr<driver> d;
    bool answering = true;  ///< at the last check_nodes()
  };
  std::vector<member> members() const;
  /// The driver of node `node_id` (empty: home). Errors: unavailable (not driven here).
  result<std::shared_ptr<driver>> on(std::string_view node_id) const;
  /// The members to ask about `id`: the one holding it, or all when no row names it.
  result<std::vector<member>> holders(std::string_view id) const;
  /// Runs `op` on each holder of `id`; the first error, else success.
  result<void> on_holders(std::string_view id,
                          const std::function<result<void>(driver&)>& op) const;

  const std::shared_ptr<driver> home_;
  const node_locator locate_;
  mutable std::mutex mutex_;
  std::vector<member> members_;  ///< home first
  std::function<void()> wake_;
};

}  // namespace litterbox::hypervisor
