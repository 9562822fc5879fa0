#include "controlplane/core/config.hpp"

namespace litterbox::controlplane {

std::vector<instance_type_spec> default_instance_types() {
  return {
      {"small", 1, 1024, std::nullopt},
      {"medium", 2, 2048, std::nullopt},
      {"large", 4, 4096, std::nullopt},
  };
}

}  // namespace litterbox::controlplane
