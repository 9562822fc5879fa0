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

}  // namespace litterbox::controlplane
