#include "controlplane/core/store.hpp"

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

}  // namespace litterbox::controlplane
