#pragma once

#include "base/clock.hpp"
#include "base/result.hpp"
#include "controlplane/core/config.hpp"
#include "controlplane/core/store.hpp"
#include "schema/requests.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace litterbox::controlplane {

/// A create request with every rule applied and every default resolved.
struct resolved_create {
  std::string image;
  std::optional<std::string> instance_type;
  int cpus = 1;
  int memory_mib = 1024;
  std::optional<int> disk_gb;
  std::map<std::string, std::string> env;
  std::vector<std::string> authorized_keys;  ///< empty: the server mints a key pair
  schema::expiry_kind expiry = schema::expiry_kind::omitted;
  std::optional<timestamp> expires_at;
};

/// How many bytes of root disk an image reference needs, when that is known without the
/// network (hypervisor::driver::known_image_bytes); nullopt when it is not.
using image_size_lookup = std::function<std::optional<std::uint64_t>(std::string_view image)>;

/// Applies API.md's rules for POST /hosts. With `image_bytes`, a disk_gb (asked for, or of the
/// instance type) smaller than the image is refused at loc body/disk_gb. Errors:
/// errc::validation with one issue per problem; errc::bad_request for an unknown
/// instance_type or provider.
result<resolved_create> validate_create(const schema::create_host_request& req, const config& cfg,
                                        timestamp now, std::string_view provider,
                                        const image_size_lookup& image_bytes = {});

/// Every problem with an env map (key pattern, NUL/CR/LF in values, total size, reserved
/// keys); all at loc ["body","env"]. Messages never contain values.
std::vector<field_issue> env_issues(const std::map<std::string, std::string>& env,
                                    std::size_t max_bytes);

/// 1–255 characters of A-Z a-z 0-9 _ - : .
bool is_valid_idempotency_key(std::string_view key);

/// True for an OCI reference the image pipeline accepts (hypervisor::image::parse_reference,
/// the one grammar): [registry/]repo[:tag][@sha256:…], lowercase repository components.
bool is_valid_image_reference(std::string_view ref);

/// GET /hosts parameters as they arrived on the query string.
struct list_params {
  std::vector<std::string> statuses;
  std::optional<std::string> limit;
  std::optional<std::string> after;
};

/// Applies API.md's rules for GET /hosts: statuses, limit within LITTERBOX_LIST_MAX_LIMIT
/// (default LITTERBOX_LIST_DEFAULT_LIMIT), an id cursor. Errors: errc::validation with
/// loc query/status|limit|after.
result<list_query> validate_list(const list_params& params, const config& cfg);

/// A host id from the path, canonicalised. Errors: errc::validation, loc path/host_id.
result<std::string> validate_host_id(std::string_view id);

/// True for an authorized_keys line cloud-init will take: valid UTF-8 (no overlong forms or
/// surrogates) without C0/C1 control characters, DEL or Unicode noncharacters.
bool is_clean_key_text(std::string_view line);

}  // namespace litterbox::controlplane
