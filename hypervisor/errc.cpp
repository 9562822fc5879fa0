#include "hypervisor/errc.hpp"

#include <array>
#include <string>
#include <utility>

namespace litterbox::hypervisor {
namespace {

constexpr std::array<std::pair<errc, std::string_view>, 16> k_kinds{{
    {errc::image_not_found, "ImageNotFound"},
    {errc::registry_unavailable, "RegistryUnavailable"},
    {errc::image_corrupt, "ImageCorrupt"},
    {errc::image_invalid, "ImageInvalid"},
    {errc::insufficient_disk, "InsufficientDisk"},
    {errc::vm_create_failed, "VmCreateFailed"},
    {errc::boot_failed, "BootFailed"},
    {errc::boot_timeout, "BootTimeout"},
    {errc::host_key_mismatch, "HostKeyMismatch"},
    {errc::teardown_failed, "TeardownFailed"},
    {errc::unavailable, "HypervisorUnavailable"},
    {errc::not_found, "NotFound"},
    {errc::internal, "InternalError"},
    {errc::clone_unsupported, "CloneUnsupported"},
    {errc::template_missing, "TemplateMissing"},
    {errc::port_busy, "PortBusy"},
}};

class category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "litterbox.hypervisor"; }
  std::string message(int ev) const override { return std::string(kind_name({ev, *this})); }
};

}  // namespace

const std::error_category& category() {
  static const category_impl instance;
  return instance;
}

std::string_view kind_name(const std::error_code& code) {
  if (code.category() == category()) {
    for (const auto& [e, name] : k_kinds) {
      if (static_cast<int>(e) == code.value()) {
        return name;
      }
    }
  }
  return "InternalError";
}

}  // namespace litterbox::hypervisor
