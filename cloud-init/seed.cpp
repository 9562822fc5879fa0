#include "cloud-init/seed.hpp"

#include "cloud-init/errc.hpp"
#include "cloud-init/yaml.hpp"

#include <algorithm>
#include <cctype>

namespace litterbox::cloudinit {
namespace {

bool all_of(std::string_view s, bool (*pred)(char)) {
  return std::all_of(s.begin(), s.end(), pred);
}
bool is_lower_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
bool is_alnum(char c) {
  return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}
bool is_user_char(char c) {
  return is_lower_alnum(c) || c == '_' || c == '-';
}
bool is_host_char(char c) {
  return is_lower_alnum(c) || c == '-';
}
bool is_id_char(char c) {
  return is_alnum(c) || c == '-';
}
bool is_env_key_char(char c) {
  return is_alnum(c) || c == '_';
}

bool valid_username(std::string_view u) {
  return !u.empty() && u.size() <= 32 && (u[0] == '_' || (u[0] >= 'a' && u[0] <= 'z')) &&
         all_of(u, is_user_char);
}
bool valid_hostname(std::string_view h) {
  return !h.empty() && h.size() <= 63 && h.front() != '-' && h.back() != '-' &&
         all_of(h, is_host_char);
}
bool valid_env_key(std::string_view k) {
  return !k.empty() && !(k[0] >= '0' && k[0] <= '9') && all_of(k, is_env_key_char);
}
bool has_line_break_or_nul(std::string_view v) {
  return v.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

error invalid(std::string what) {
  return make_error(errc::invalid_spec, std::move(what));
}

// The line the guest prints when cloud-final is over. Runs as a transient unit ordered after
// cloud-final.service so it reports the end of the whole final stage, not a step inside it.
// The token only ever appears base64-encoded in user-data, so nothing that echoes user-data
// to the console can forge the line.
std::string ready_script(const seed_spec& spec) {
  std::string s;
  s += "#!/bin/sh\n";
  s += "# Reports the end of cloud-init's final stage to the hypervisor.\n";
  s += "systemctl try-reload-or-restart ssh.service >/dev/null 2>&1\n";
  s += "status=$(cloud-init status 2>/dev/null | sed -n 's/^status: *//p')\n";
  s += "if [ \"$status\" = done ]; then word=";
  s += k_ready_word;
  s += "; else word=";
  s += k_failed_word;
  s += "; fi\n";
  s += "printf '\\n%s %s %s\\n' \"$word\" '" + spec.ready_token + "' \"$status\" > " +
       spec.ready_device + "\n";
  return s;
}

std::string sshd_dropin() {
  // Only the pinned key is served: keys baked into the image are shared by every guest.
  // PermitUserEnvironment lets ~/.ssh/environment reach every session, with or without a
  // command or a tty, byte for byte.
  return "HostKey /etc/ssh/ssh_host_ed25519_key\n"
         "PermitUserEnvironment yes\n"
         "PasswordAuthentication no\n"
         "KbdInteractiveAuthentication no\n";
}

std::string environment_file(const seed_spec& spec) {
  std::string s;
  for (const auto& [k, v] : spec.env) {
    s += k;
    s += '=';
    s += v;
    s += '\n';
  }
  return s;
}

void write_file_entry(std::string& y, std::string_view path, std::string_view owner,
                      std::string_view mode, std::string_view content, bool defer) {
  y += "  - path: " + yaml_quote(path) + "\n";
  y += "    owner: " + yaml_quote(owner) + "\n";
  y += "    permissions: " + yaml_quote(mode) + "\n";
  y += "    encoding: \"b64\"\n";
  y += "    content: " + yaml_quote(base64_encode(content)) + "\n";
  if (defer) {
    y += "    defer: true\n";
  }
}

result<void> validate(const seed_spec& spec) {
  if (spec.instance_id.empty() || spec.instance_id.size() > 128 ||
      !all_of(spec.instance_id, is_id_char)) {
    return invalid("instance id must be letters, digits and '-'");
  }
  if (!valid_hostname(spec.hostname)) {
    return invalid("hostname must be a DNS label");
  }
  if (!valid_username(spec.username)) {
    return invalid("user name must match [a-z_][a-z0-9_-]{0,31}");
  }
  if (spec.ready_token.size() < 16 || spec.ready_token.size() > 128 ||
      !all_of(spec.ready_token, is_alnum)) {
    return invalid("ready token must be 16-128 letters or digits");
  }
  if (spec.ready_device.empty() || spec.ready_device.front() != '/' ||
      !std::all_of(spec.ready_device.begin(), spec.ready_device.end(),
                   [](char c) { return is_alnum(c) || c == '/' || c == '-' || c == '_'; })) {
    return invalid("ready device must be an absolute device path");
  }
  if (spec.host_private_key.empty() || spec.host_public_key.empty() ||
      has_line_break_or_nul(spec.host_public_key)) {
    return invalid("host key pair is missing or malformed");
  }
  for (const auto& key : spec.authorized_keys) {
    if (key.empty() || has_line_break_or_nul(key)) {
      return invalid("authorized keys must be single lines");
    }
  }
  for (const auto& [k, v] : spec.env) {
    if (!valid_env_key(k)) {
      return invalid("env keys must match [A-Za-z_][A-Za-z0-9_]*");
    }
    if (has_line_break_or_nul(v)) {
      return invalid("env values must not contain NUL, CR or LF");
    }
  }
  return {};
}

}  // namespace

result<seed_files> render_seed(const seed_spec& spec) {
  if (auto ok = validate(spec); !ok) {
    return ok.error();
  }
  const std::string home = "/home/" + spec.username;
  const std::string owner = spec.username + ":" + spec.username;

  std::string y = "#cloud-config\n";
  y += "hostname: " + yaml_quote(spec.hostname) + "\n";
  y += "preserve_hostname: false\n";
  y += "manage_etc_hosts: true\n";
  y += "locale: false\n";
  y += "disable_root: true\n";
  y += "ssh_pwauth: false\n";
  y += "ssh_deletekeys: false\n";
  y += "ssh_genkeytypes: []\n";
  // Printing fingerprints and keys to an emulated serial console costs seconds per boot.
  y += "no_ssh_fingerprints: true\n";
  y += "ssh:\n";
  y += "  emit_keys_to_console: false\n";
  y += "ssh_keys:\n";
  y += "  ed25519_private: " + yaml_quote(spec.host_private_key) + "\n";
  y += "  ed25519_public: " + yaml_quote(spec.host_public_key) + "\n";
  y += "users:\n";
  y += "  - name: " + yaml_quote(spec.username) + "\n";
  y += "    shell: \"/bin/bash\"\n";
  y += "    lock_passwd: true\n";
  y += "    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n";
  if (spec.authorized_keys.empty()) {
    y += "    ssh_authorized_keys: []\n";
  } else {
    y += "    ssh_authorized_keys:\n";
    for (const auto& key : spec.authorized_keys) {
      y += "      - " + yaml_quote(key) + "\n";
    }
  }
  y += "write_files:\n";
  write_file_entry(y, "/etc/ssh/sshd_config.d/50-litterbox.conf", "root:root", "0644",
                   sshd_dropin(), false);
  write_file_entry(y, "/usr/local/lib/litterbox/ready", "root:root", "0700", ready_script(spec),
                   false);
  // Deferred to the final stage: the user and its ~/.ssh exist by then.
  write_file_entry(y, home + "/.ssh/environment", owner, "0600", environment_file(spec), true);
  y += "runcmd:\n";
  y += "  - [\"systemd-run\", \"--no-block\", \"--unit=litterbox-ready\", "
       "\"--property=After=cloud-final.service\", \"/usr/local/lib/litterbox/ready\"]\n";

  std::string m;
  m += "instance-id: " + yaml_quote(spec.instance_id) + "\n";
  m += "local-hostname: " + yaml_quote(spec.hostname) + "\n";
  return seed_files{std::move(y), std::move(m)};
}

std::string redact_ready_tokens(std::string text) {
  for (const std::string_view marker : {k_ready_word, k_failed_word}) {
    const std::string prefix = std::string(marker) + " ";
    for (auto p = text.find(prefix); p != std::string::npos; p = text.find(prefix, p)) {
      const auto start = p + prefix.size();
      auto end = start;
      while (end < text.size() && std::isalnum(static_cast<unsigned char>(text[end])) != 0) {
        ++end;
      }
      text.replace(start, end - start, "<token>");
      p = start;
    }
  }
  return text;
}

}  // namespace litterbox::cloudinit
