#include "cloud-init/errc.hpp"

#include <string>

namespace litterbox::cloudinit {
namespace {

class category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "litterbox.cloudinit"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::invalid_spec:
        return "invalid seed spec";
      case errc::seed_build_failed:
        return "seed image build failed";
    }
    return "unknown cloudinit error";
  }
};

}  // namespace

const std::error_category& category() {
  static const category_impl instance;
  return instance;
}

}  // namespace litterbox::cloudinit
