#include "hypervisor/libvirt/template_store.hpp"

#include "hypervisor/errc.hpp"
#include "hypervisor/libvirt/domain_xml.hpp"

#include <algorithm>
#include <charconv>
#include <map>

namespace litterbox::hypervisor {
namespace {

bool is_lower_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool valid_username(std::string_view u) {
  return !u.empty() && u.size() <= 32 && (u[0] == '_' || (u[0] >= 'a' && u[0] <= 'z')) &&
         std::all_of(u.begin(), u.end(),
                     [](char c) { return is_lower_alnum(c) || c == '_' || c == '-'; });
}

bool valid_hostname(std::string_view h) {
  return !h.empty() && h.size() <= 63 && h.front() != '-' && h.back() != '-' &&
         std::all_of(h.begin(), h.end(), [](char c) { return is_lower_alnum(c) || c == '-'; });
}

bool valid_env_key(std::string_view k) {
  return !k.empty() && !(k[0] >= '0' && k[0] <= '9') && std::all_of(k.begin(), k.end(), [](char c) {
    return is_lower_alnum(c) || (c >= 'A' && c <= 'Z') || c == '_';
  });
}

bool single_line(std::string_view v) {
  return v.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

error invalid(std::string what) {
  return make_error(errc::vm_create_failed, std::move(what));
}

bool parse_int(std::string_view s, int& out) {
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

}  // namespace

std::string render_template_info(const template_info& info) {
  std::string s;
  s += "image_digest=" + info.key.image_digest + "\n";
  s += "cpus=" + std::to_string(info.key.cpus) + "\n";
  s += "memory_mib=" + std::to_string(info.key.memory_mib) + "\n";
  s += "disk_gb=" + (info.key.disk_gb ? std::to_string(*info.key.disk_gb) : std::string()) + "\n";
  s += "ssh_username=" + info.ssh_username + "\n";
  s += "name=" + info.name + "\n";
  s += "accel=" + info.accel + "\n";
  s += "layout=" + std::to_string(k_template_layout) + "\n";
  return s;
}

result<template_info> parse_template_info(std::string_view text) {
  std::map<std::string, std::string, std::less<>> fields;
  while (!text.empty()) {
    const auto eol = text.find('\n');
    if (eol == std::string_view::npos) {
      break;  // a last line without its newline was cut short
    }
    const std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol + 1);
    const auto eq = line.find('=');
    if (eq != std::string_view::npos) {
      fields.emplace(std::string(line.substr(0, eq)), std::string(line.substr(eq + 1)));
    }
  }
  const auto bad = [] {
    return make_error(errc::template_missing, "the template's info file is incomplete");
  };
  for (const char* k :
       {"image_digest", "cpus", "memory_mib", "disk_gb", "ssh_username", "name", "accel"}) {
    if (fields.count(k) == 0) {
      return bad();
    }
  }
  if (const auto layout = fields.find("layout");
      layout == fields.end() || layout->second != std::to_string(k_template_layout)) {
    return make_error(errc::template_missing,
                      "the template was saved with an older device layout and must be rebuilt");
  }
  template_info info;
  info.key.image_digest = fields["image_digest"];
  info.ssh_username = fields["ssh_username"];
  info.name = fields["name"];
  info.accel = fields["accel"];
  if (!parse_int(fields["cpus"], info.key.cpus) ||
      !parse_int(fields["memory_mib"], info.key.memory_mib)) {
    return bad();
  }
  if (!fields["disk_gb"].empty()) {
    int gb = 0;
    if (!parse_int(fields["disk_gb"], gb)) {
      return bad();
    }
    info.key.disk_gb = gb;
  }
  if (info.key.image_digest.empty() || info.name.empty() || info.ssh_username.empty()) {
    return bad();
  }
  return info;
}

std::vector<std::string> template_scrub_paths(std::string_view ssh_username,
                                              std::string_view instance_id) {
  const std::string home = "/home/" + std::string(ssh_username);
  const std::string instance = "/var/lib/cloud/instances/" + std::string(instance_id);
  return {
      "/etc/ssh/ssh_host_ed25519_key",
      "/etc/ssh/ssh_host_ed25519_key.pub",
      home + "/.ssh/authorized_keys",
      home + "/.ssh/environment",
      "/var/lib/systemd/random-seed",
      instance + "/user-data.txt",
      instance + "/user-data.txt.i",
      instance + "/cloud-config.txt",
      instance + "/obj.pkl",
      "/run/cloud-init/instance-data-sensitive.json",
      "/usr/local/lib/litterbox/ready",
  };
}

result<void> validate_login(const vm_spec& spec) {
  if (!valid_username(spec.ssh_username)) {
    return invalid("user name must match [a-z_][a-z0-9_-]{0,31}");
  }
  for (const auto& key : spec.authorized_keys) {
    if (key.empty() || !single_line(key)) {
      return invalid("authorized keys must be single lines");
    }
  }
  for (const auto& [k, v] : spec.env) {
    if (!valid_env_key(k)) {
      return invalid("env keys must match [A-Za-z_][A-Za-z0-9_]*");
    }
    if (!single_line(v)) {
      return invalid("env values must not contain NUL, CR or LF");
    }
  }
  return {};
}

result<std::vector<guest_file>> login_files(const vm_spec& spec) {
  if (auto ok = validate_login(spec); !ok) {
    return ok.error();
  }
  const std::string ssh_dir = "/home/" + spec.ssh_username + "/.ssh/";
  std::string keys;
  for (const auto& key : spec.authorized_keys) {
    keys += key + "\n";
  }
  // The format of the seed's ~/.ssh/environment (cloud-init/seed.cpp): sshd reads it with
  // PermitUserEnvironment, one NAME=value per line, the value taken verbatim.
  std::string env;
  for (const auto& [k, v] : spec.env) {
    env += k + "=" + v + "\n";
  }
  // The environment first: once the keys are in, the caller could be logging in.
  return std::vector<guest_file>{{ssh_dir + "environment", std::move(env)},
                                 {ssh_dir + "authorized_keys", std::move(keys)}};
}

result<std::vector<guest_file>> identity_files(const vm_spec& spec, std::string_view machine_id) {
  if (!valid_hostname(spec.name)) {
    return invalid("hostname must be a DNS label");
  }
  if (machine_id.size() != 32 || !std::all_of(machine_id.begin(), machine_id.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
      })) {
    return invalid("machine id must be 32 lowercase hex digits");
  }
  if (spec.host_key.private_openssh.empty() || spec.host_key.public_line.empty() ||
      !single_line(spec.host_key.public_line)) {
    return invalid("host key pair is missing or malformed");
  }
  auto login = login_files(spec);
  if (!login) {
    return login.error();
  }
  std::string private_key = spec.host_key.private_openssh;
  if (private_key.back() != '\n') {
    private_key += '\n';
  }
  std::vector<guest_file> files;
  files.push_back({"/etc/ssh/ssh_host_ed25519_key.pub", spec.host_key.public_line + "\n"});
  files.push_back({"/etc/ssh/ssh_host_ed25519_key", std::move(private_key)});
  files.push_back({"/etc/machine-id", std::string(machine_id) + "\n"});
  files.push_back({"/etc/hostname", spec.name + "\n"});
  // What cloud-init's manage_etc_hosts renders on Debian for this hostname.
  files.push_back({"/etc/hosts", "127.0.1.1 " + spec.name + " " + spec.name +
                                     "\n127.0.0.1 localhost\n\n"
                                     "# The following lines are desirable for IPv6 capable "
                                     "hosts\n::1 localhost ip6-localhost ip6-loopback\n"
                                     "ff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n" +
                                     std::string(k_proxy_hosts_line) + "\n"});
  files.push_back({"/proc/sys/kernel/hostname", spec.name});
  for (auto& f : *login) {
    files.push_back(std::move(f));
  }
  return files;
}

}  // namespace litterbox::hypervisor
