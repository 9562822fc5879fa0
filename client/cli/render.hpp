#pragma once

#include "base/result.hpp"
#include "client/client.hpp"
#include "schema/host.hpp"

#include <optional>
#include <string>
#include <vector>

namespace litterbox::client::cli {

/// Exit codes of the CLI (documented in `litterbox --help`).
namespace exit_code {
inline constexpr int ok = 0;
inline constexpr int usage = 1;  ///< bad arguments or a local problem (file, configuration)
inline constexpr int api = 2;    ///< any other error response, or a malformed one
inline constexpr int not_found = 3;
inline constexpr int auth = 4;
inline constexpr int provisioning_failed = 5;
inline constexpr int unavailable = 6;  ///< 503, unreachable service, or a wait that timed out
inline constexpr int conflict = 7;     ///< the host's state forbids the operation
inline constexpr int quota = 8;        ///< 429: a quota or rate limit was hit
inline constexpr int ssh = 255;        ///< SSH connection, authentication or host key failed
}  // namespace exit_code

/// The exit code for an error (see exit_code).
int exit_code_for(const error& e);

/// "litterbox: <message>\n", plus one indented line per validation issue.
std::string render_error(const error& e);

/// A host as a readable block of "label: value" lines. `key_file` names where the CLI
/// stored the minted private key, when it did; the key itself is never printed.
std::string render_host(const schema::host& h, const std::optional<std::string>& key_file = {});

/// The `ls` table: ID, NAME, STATUS, IMAGE, SSH, EXPIRES (seconds precision, UTC).
std::string render_host_table(const std::vector<schema::host>& hosts);

/// The wire JSON of a host for scripts, with `private_key` always null (the CLI keeps it in
/// a file) and `private_key_file` added when it stored one.
std::string render_host_json(const schema::host& h,
                             const std::optional<std::string>& key_file = {});

/// A JSON array of hosts (private keys nulled).
std::string render_hosts_json(const std::vector<schema::host>& hosts);

/// `doctor` output: one line per check, then the overall verdict.
std::string render_doctor(const doctor_report& report);

/// A key's quota as "max_hosts=5 max_cpus=8" ("none" without limits).
std::string render_quota(const key_quota& q);

/// A freshly created key: id, namespace, name, quota, created_at, and the secret on its own
/// `key:` line (the only time it is shown).
std::string render_created_key(const created_key& k);

/// The `keys ls` table: ID, NAMESPACE, NAME, QUOTA, CREATED.
std::string render_key_table(const std::vector<key_info>& keys);

/// A JSON array of keys as the server listed them.
std::string render_keys_json(const std::vector<key_info>& keys);

/// The `audit` table: ID, AT, NAMESPACE, KEY ("admin" for an admin token), ACTION, HOST,
/// STATUS, REQUEST.
std::string render_audit_table(const std::vector<audit_record>& records);

/// A JSON array of audit records as the server sent them.
std::string render_audit_json(const std::vector<audit_record>& records);

/// One progress line for a status change during create ("  pulling_image").
std::string render_progress(schema::host_status status);

}  // namespace litterbox::client::cli
