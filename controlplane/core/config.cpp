#include "controlplane/core/config.hpp"

#include "controlplane/core/errc.hpp"

#include <algorithm>
#include <charconv>

namespace litterbox::controlplane {

std::vector<instance_type_spec> default_instance_types() {
  return {
      {"small", 1, 1024, std::nullopt},
      {"medium", 2, 2048, std::nullopt},
      {"large", 4, 4096, std::nullopt},
  };
}

namespace {

std::string_view trimmed(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

}  // namespace

result<std::vector<pool_spec>> parse_pools(std::string_view text, const config& cfg) {
  std::vector<pool_spec> out;
  while (!trimmed(text).empty()) {
    const auto comma = text.find(',');
    const auto entry = trimmed(text.substr(0, comma));
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    if (entry.empty()) {
      continue;
    }
    auto bad = [&](std::string why) {
      return make_error(errc::validation,
                        "LITTERBOX_POOL: \"" + std::string(entry) +
                            "\" is not count[:instance_type][@image]: " + std::move(why));
    };
    // The image comes last and may itself hold ':' and '@' (a tag, a digest).
    const auto at = entry.find('@');
    const auto head = entry.substr(0, at);
    pool_spec spec;
    spec.image = at == std::string_view::npos ? cfg.default_image
                                              : std::string(trimmed(entry.substr(at + 1)));
    spec.cpus = cfg.default_cpus;
    spec.memory_mib = cfg.default_memory_mib;
    const auto colon = head.find(':');
    const auto count = trimmed(head.substr(0, colon));
    const auto [end, ec] = std::from_chars(count.data(), count.data() + count.size(), spec.size);
    if (ec != std::errc() || end != count.data() + count.size() || spec.size < 0 ||
        spec.size > 1000) {
      return bad("the count must be 0-1000");
    }
    if (colon != std::string_view::npos) {
      const auto type = trimmed(head.substr(colon + 1));
      const auto it = std::find_if(cfg.instance_types.begin(), cfg.instance_types.end(),
                                   [&](const instance_type_spec& t) { return t.name == type; });
      if (it == cfg.instance_types.end()) {
        return bad("no instance type \"" + std::string(type) + "\"");
      }
      spec.cpus = it->cpus;
      spec.memory_mib = it->memory_mib;
      spec.disk_gb = it->disk_gb;
    }
    if (spec.image.empty()) {
      return bad("the image is empty");
    }
    if (spec.size > 0) {
      out.push_back(std::move(spec));
    }
  }
  return out;
}

}  // namespace litterbox::controlplane
