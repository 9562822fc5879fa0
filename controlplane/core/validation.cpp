#include "controlplane/core/validation.hpp"

#include "base/uuid.hpp"
#include "controlplane/core/errc.hpp"
#include "hypervisor/image/reference.hpp"
#include "hypervisor/ssh/keys.hpp"

#include <boost/locale/utf.hpp>

#include <algorithm>
#include <cctype>
#include <limits>

namespace litterbox::controlplane {
namespace {

constexpr std::size_t k_max_authorized_keys = 64;
constexpr std::uint64_t k_gib = std::uint64_t{1} << 30;

bool is_reserved_env_key(std::string_view k) {
  return k == "TAILSCALE_AUTHKEY" || k.rfind("LITTERBOX_", 0) == 0;
}

bool is_env_key(std::string_view k) {
  if (k.empty() || (std::isalpha(static_cast<unsigned char>(k[0])) == 0 && k[0] != '_')) {
    return false;
  }
  return std::all_of(k.begin(), k.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

/// Size limits per API.md ("positive ints within configured maxima"), pydantic-style messages.
void check_size(std::vector<field_issue>& issues, const char* field,
                const std::optional<std::int64_t>& v, int max) {
  if (!v) {
    return;
  }
  if (*v <= 0) {
    issues.push_back({{"body", field}, "Input should be greater than 0", "greater_than"});
  } else if (*v > max) {
    issues.push_back({{"body", field},
                      "Input should be less than or equal to " + std::to_string(max),
                      "less_than_equal"});
  }
}

error validation_error(std::vector<field_issue> issues) {
  error e = make_error(errc::validation, "request validation failed");
  e.issues = std::move(issues);
  return e;
}

}  // namespace

std::vector<field_issue> env_issues(const std::map<std::string, std::string>& env,
                                    std::size_t max_bytes) {
  std::vector<field_issue> issues;
  std::vector<std::string> bad_keys;
  std::vector<std::string> bad_values;
  std::vector<std::string> reserved;
  std::size_t total = 0;
  for (const auto& [k, v] : env) {
    total += k.size() + v.size() + 2;  // as the guest stores it: KEY=VALUE\n
    if (!is_env_key(k)) {
      bad_keys.push_back(k);
    } else if (is_reserved_env_key(k)) {
      reserved.push_back(k);
    }
    if (v.find_first_of(std::string_view("\0\r\n", 3)) != std::string::npos) {
      bad_values.push_back(k);
    }
  }
  auto join = [](const std::vector<std::string>& keys) {
    std::string out;
    for (const auto& k : keys) {
      out += (out.empty() ? "" : ", ") + k;
    }
    return out;
  };
  if (!bad_keys.empty()) {
    issues.push_back({{"body", "env"},
                      "Value error, env keys must match [A-Za-z_][A-Za-z0-9_]*: " + join(bad_keys),
                      "value_error"});
  }
  if (!bad_values.empty()) {
    issues.push_back({{"body", "env"},
                      "Value error, env values must not contain NUL, CR or LF: " + join(bad_values),
                      "value_error"});
  }
  if (total > max_bytes) {
    issues.push_back({{"body", "env"},
                      "Value error, env is too large: " + std::to_string(total) +
                          " bytes, the limit is " + std::to_string(max_bytes),
                      "value_error"});
  }
  if (!reserved.empty()) {
    // std::map iterates in sorted order, so `reserved` is sorted as API.md requires.
    issues.push_back({{"body", "env"},
                      "Value error, reserved env keys are not allowed: " + join(reserved),
                      "value_error"});
  }
  return issues;
}

bool is_valid_idempotency_key(std::string_view key) {
  if (key.empty() || key.size() > 255) {
    return false;
  }
  return std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == ':' || c == '.';
  });
}

bool is_valid_image_reference(std::string_view ref) {
  // The registry only matters for which names get "library/"; any valid one gives the same
  // verdict, so admission cannot accept what the image pipeline would refuse.
  return static_cast<bool>(hypervisor::image::parse_reference(ref, "docker.io"));
}

bool is_clean_key_text(std::string_view line) {
  using traits = boost::locale::utf::utf_traits<char>;
  auto it = line.begin();
  while (it != line.end()) {
    const auto c = traits::decode(it, line.end());
    if (c == boost::locale::utf::illegal || c == boost::locale::utf::incomplete) {
      return false;
    }
    const bool control = c < 0x20 || (c >= 0x7f && c <= 0x9f);
    // U+FDD0..U+FDEF and the last two code points of every plane (U+FFFE, U+FFFF, U+1FFFE…):
    // YAML, and so cloud-init, refuses the latter and with them the whole user-data.
    const bool noncharacter = (c >= 0xfdd0 && c <= 0xfdef) || (c & 0xfffeU) == 0xfffeU;
    if (control || noncharacter) {
      return false;
    }
  }
  return true;
}

result<resolved_create> validate_create(const schema::create_host_request& req, const config& cfg,
                                        timestamp now, std::string_view provider,
                                        const image_size_lookup& image_bytes) {
  if (req.provider && *req.provider != provider) {
    return make_error(errc::bad_request, "unknown provider: " + *req.provider);
  }
  resolved_create out;
  out.cpus = cfg.default_cpus;
  out.memory_mib = cfg.default_memory_mib;
  if (req.instance_type) {
    const auto& types = cfg.instance_types;
    const auto it = std::find_if(types.begin(), types.end(),
                                 [&](const auto& t) { return t.name == *req.instance_type; });
    if (it == types.end()) {
      return make_error(errc::bad_request, "unknown instance_type: " + *req.instance_type);
    }
    out.instance_type = it->name;
    out.cpus = it->cpus;
    out.memory_mib = it->memory_mib;
    out.disk_gb = it->disk_gb;
  }

  std::vector<field_issue> issues;
  if (req.image) {
    const auto& image = *req.image;
    if (image.find_first_not_of(" \t\r\n") == std::string::npos) {
      issues.push_back({{"body", "image"}, "Value error, image must not be blank", "value_error"});
    } else if (!is_valid_image_reference(image)) {
      issues.push_back({{"body", "image"},
                        "Value error, image must be an OCI reference (registry/repo:tag or "
                        "registry/repo@sha256:..., repository in lowercase)",
                        "value_error"});
    } else {
      out.image = image;
    }
  } else {
    out.image = cfg.default_image;
  }
  check_size(issues, "cpus", req.cpus, cfg.max_cpus);
  check_size(issues, "memory_mib", req.memory_mib, cfg.max_memory_mib);
  check_size(issues, "disk_gb", req.disk_gb, cfg.max_disk_gb);
  if (req.env) {
    auto env = env_issues(*req.env, cfg.max_env_bytes);
    issues.insert(issues.end(), env.begin(), env.end());
    out.env = *req.env;
  }
  out.expiry = req.expiry;
  if (req.expiry == schema::expiry_kind::at && req.expires_at) {
    if (*req.expires_at <= now) {
      issues.push_back(
          {{"body", "expires_at"}, "Value error, expires_at must be in the future", "value_error"});
    }
    out.expires_at = req.expires_at;
  }
  if (req.ssh_authorized_keys) {
    const auto& keys = *req.ssh_authorized_keys;
    if (keys.size() > k_max_authorized_keys) {
      issues.push_back(
          {{"body", "ssh_authorized_keys"},
           "Value error, at most " + std::to_string(k_max_authorized_keys) + " keys are allowed",
           "value_error"});
    }
    for (std::size_t i = 0; i < keys.size() && i < k_max_authorized_keys; ++i) {
      if (!hypervisor::is_valid_public_key(keys[i])) {
        issues.push_back({{"body", "ssh_authorized_keys", std::to_string(i)},
                          "Value error, not an OpenSSH public key line",
                          "value_error"});
      } else if (!is_clean_key_text(keys[i])) {
        issues.push_back({{"body", "ssh_authorized_keys", std::to_string(i)},
                          "Value error, the key line must be UTF-8 without control characters "
                          "or Unicode noncharacters",
                          "value_error"});
      }
    }
    out.authorized_keys = keys;
  }
  // Only a disk_gb that passed its own checks, for an image whose size is known right now.
  const bool disk_ok = std::none_of(issues.begin(), issues.end(), [](const field_issue& i) {
    return i.loc.size() > 1 && (i.loc[1] == "disk_gb" || i.loc[1] == "image");
  });
  const auto disk_gb = req.disk_gb ? req.disk_gb : std::optional<std::int64_t>(out.disk_gb);
  if (image_bytes && disk_gb && disk_ok && !out.image.empty()) {
    if (const auto needed = image_bytes(out.image);
        needed && static_cast<std::uint64_t>(*disk_gb) * k_gib < *needed) {
      issues.push_back({{"body", "disk_gb"},
                        "Value error, disk_gb must be at least " +
                            std::to_string((*needed + k_gib - 1) / k_gib) + " for image " +
                            out.image,
                        "value_error"});
    }
  }
  if (!issues.empty()) {
    return validation_error(std::move(issues));
  }
  if (req.cpus) {
    out.cpus = static_cast<int>(*req.cpus);
  }
  if (req.memory_mib) {
    out.memory_mib = static_cast<int>(*req.memory_mib);
  }
  if (req.disk_gb) {
    out.disk_gb = static_cast<int>(*req.disk_gb);
  }
  return out;
}

result<list_query> validate_list(const list_params& params, const config& cfg) {
  list_query q;
  std::vector<field_issue> issues;
  for (const auto& s : params.statuses) {
    if (auto st = schema::parse_host_status(s)) {
      q.statuses.push_back(*st);
    } else {
      issues.push_back({{"query", "status"},
                        "Input should be 'provisioning', 'pulling_image', 'creating_vm', "
                        "'bootstrapping', 'active', 'deleting' or 'error'",
                        "enum"});
    }
  }
  q.limit = cfg.list_default_limit;
  if (params.limit) {
    const auto& text = *params.limit;
    const bool digits =
        !text.empty() && text.size() <= 9 &&
        std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
    const std::size_t value = digits ? std::stoul(text) : 0;
    if (!digits) {
      issues.push_back({{"query", "limit"}, "Input should be a valid integer", "int_parsing"});
    } else if (value < 1) {
      issues.push_back({{"query", "limit"}, "Input should be greater than 0", "greater_than"});
    } else if (value > cfg.list_max_limit) {
      issues.push_back(
          {{"query", "limit"},
           "Input should be less than or equal to " + std::to_string(cfg.list_max_limit),
           "less_than_equal"});
    } else {
      q.limit = value;
    }
  }
  if (params.after) {
    if (auto a = parse_uuid(*params.after)) {
      q.after = *a;
    } else {
      issues.push_back({{"query", "after"}, "Input should be a valid UUID", "uuid_parsing"});
    }
  }
  if (!issues.empty()) {
    error e = make_error(errc::validation, "invalid query");
    e.issues = std::move(issues);
    return e;
  }
  return q;
}

result<std::string> validate_host_id(std::string_view id) {
  auto parsed = parse_uuid(id);
  if (!parsed) {
    error e = make_error(errc::validation, "malformed host id");
    e.issues.push_back({{"path", "host_id"}, "Input should be a valid UUID", "uuid_parsing"});
    return e;
  }
  return *parsed;
}

}  // namespace litterbox::controlplane
