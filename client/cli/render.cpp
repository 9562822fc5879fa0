#include "client/cli/render.hpp"

#include "base/time.hpp"
#include "client/errc.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdio>

namespace litterbox::client::cli {
namespace {

/// RFC 3339 without the fraction: people do not need microseconds in a table.
std::string short_time(timestamp t) {
  auto s = format_rfc3339(t);
  if (const auto dot = s.find('.'); dot != std::string::npos) {
    s = s.substr(0, dot) + "Z";
  }
  return s;
}

std::string ssh_address(const schema::host& h) {
  if (h.ssh_host.empty()) {
    return "-";
  }
  return h.ssh_host + ":" + std::to_string(h.ssh_port);
}

nlohmann::ordered_json public_json(const schema::host& h) {
  auto j = schema::to_json(h);
  j["private_key"] = nullptr;
  return j;
}

}  // namespace

int exit_code_for(const error& e) {
  if (e.code.category() != category()) {
    return exit_code::usage;
  }
  switch (static_cast<errc>(e.code.value())) {
    case errc::auth:
      return exit_code::auth;
    case errc::not_found:
      return exit_code::not_found;
    case errc::conflict:
      return exit_code::conflict;
    case errc::provisioning_failed:
      return exit_code::provisioning_failed;
    case errc::unavailable:
    case errc::timeout:
      return exit_code::unavailable;
    case errc::api_error:
    case errc::bad_response:
      return exit_code::api;
    case errc::invalid_argument:
      return exit_code::usage;
    case errc::ssh:
    case errc::host_key_mismatch:
      return exit_code::ssh;
    case errc::quota:
      return exit_code::quota;
  }
  return exit_code::api;
}

std::string render_error(const error& e) {
  std::string message = e.message.empty() ? e.code.message() : e.message;
  // One line per error: a multi-line detail (a console tail in last_error) is cut at its
  // first line break so scripts can rely on the shape; `litterbox get` shows it whole.
  std::string out = "litterbox: ";
  for (const char c : message) {
    out.push_back(c == '\n' || c == '\r' ? ' ' : c);
  }
  out.push_back('\n');
  for (const auto& issue : e.issues) {
    std::string loc;
    for (const auto& part : issue.loc) {
      loc += loc.empty() ? part : "." + part;
    }
    out += "  " + loc + ": " + issue.msg + "\n";
  }
  return out;
}

std::string render_host(const schema::host& h, const std::optional<std::string>& key_file) {
  std::vector<std::pair<std::string, std::string>> rows;
  rows.emplace_back("id", h.id);
  rows.emplace_back("name", h.name);
  rows.emplace_back("status", std::string(schema::to_string(h.status)));
  rows.emplace_back("provider", h.provider);
  rows.emplace_back("image", h.image);
  rows.emplace_back("image digest", h.image_digest.value_or("-"));
  if (h.instance_type) {
    rows.emplace_back("instance type", *h.instance_type);
  }
  std::string size = std::to_string(h.cpus) + (h.cpus == 1 ? " cpu, " : " cpus, ") +
                     std::to_string(h.memory_mib) + " MiB memory, " +
                     (h.disk_gb ? std::to_string(*h.disk_gb) + " GB disk" : "image-sized disk");
  rows.emplace_back("size", size);
  rows.emplace_back("ssh", h.ssh_host.empty() ? "-" : h.ssh_username + "@" + ssh_address(h));
  if (h.internal_ssh_host) {
    rows.emplace_back("internal ssh", *h.internal_ssh_host);
  }
  if (key_file) {
    rows.emplace_back("private key", *key_file);
  }
  rows.emplace_back("created", short_time(h.created_at));
  rows.emplace_back("activated", h.activated_at ? short_time(*h.activated_at) : "-");
  rows.emplace_back("expires", h.expires_at ? short_time(*h.expires_at) : "never");
  if (!h.last_error.empty()) {
    rows.emplace_back("last error", h.last_error);
  }
  std::size_t width = 0;
  for (const auto& row : rows) {
    width = std::max(width, row.first.size());
  }
  std::string out;
  for (const auto& [label, value] : rows) {
    out += label + ":" + std::string(width - label.size() + 2, ' ') + value + "\n";
  }
  if (!h.known_hosts.empty()) {
    out += "known_hosts:\n";
    std::size_t pos = 0;
    while (pos < h.known_hosts.size()) {
      auto nl = h.known_hosts.find('\n', pos);
      if (nl == std::string::npos) {
        nl = h.known_hosts.size();
      }
      if (nl > pos) {
        out += "  " + h.known_hosts.substr(pos, nl - pos) + "\n";
      }
      pos = nl + 1;
    }
  }
  return out;
}

namespace {

/// Rows (the first is the header) as columns padded to their widest cell, two spaces apart.
std::string aligned(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()));
    for (std::size_t i = 0; i < row.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
    }
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) {
        line += std::string(width[i] - row[i].size() + 2, ' ');
      }
    }
    out += line + "\n";
  }
  return out;
}

std::string or_dash(const std::optional<std::string>& s) {
  return s && !s->empty() ? *s : "-";
}

/// A JSON array of objects as the server sent them, indented.
std::string json_array(const std::vector<std::string>& objects) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const auto& o : objects) {
    out.push_back(nlohmann::ordered_json::parse(o));
  }
  return out.dump(2) + "\n";
}

}  // namespace

std::string render_host_table(const std::vector<schema::host>& hosts) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"ID", "NAME", "STATUS", "IMAGE", "SSH", "EXPIRES"});
  for (const auto& h : hosts) {
    rows.push_back({h.id, h.name, std::string(schema::to_string(h.status)), h.image, ssh_address(h),
                    h.expires_at ? short_time(*h.expires_at) : "never"});
  }
  return aligned(rows);
}

std::string render_quota(const key_quota& q) {
  std::string out;
  const auto add = [&out](const char* name, const std::optional<int>& v) {
    if (v) {
      out += (out.empty() ? "" : " ") + std::string(name) + "=" + std::to_string(*v);
    }
  };
  add("max_hosts", q.max_hosts);
  add("max_cpus", q.max_cpus);
  add("max_memory_mib", q.max_memory_mib);
  return out.empty() ? "none" : out;
}

std::string render_created_key(const created_key& k) {
  return "id:         " + k.info.id + "\n" + "namespace:  " + k.info.namespace_name + "\n" +
         "name:       " + or_dash(k.info.name) + "\n" +
         "quota:      " + render_quota(k.info.quota) + "\n" + "created_at: " + k.info.created_at +
         "\n" + "key:        " + k.key + "\n";
}

std::string render_key_table(const std::vector<key_info>& keys) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"ID", "NAMESPACE", "NAME", "QUOTA", "CREATED"});
  for (const auto& k : keys) {
    rows.push_back({k.id, k.namespace_name, or_dash(k.name), render_quota(k.quota), k.created_at});
  }
  return aligned(rows);
}

std::string render_keys_json(const std::vector<key_info>& keys) {
  std::vector<std::string> objects;
  for (const auto& k : keys) {
    objects.push_back(k.json);
  }
  return json_array(objects);
}

std::string render_audit_table(const std::vector<audit_record>& records) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"ID", "AT", "NAMESPACE", "KEY", "ACTION", "HOST", "STATUS", "REQUEST"});
  for (const auto& a : records) {
    rows.push_back({a.id, a.at, a.namespace_name, a.key_id ? *a.key_id : "admin", a.action,
                    or_dash(a.host_id), a.status, a.request_id.empty() ? "-" : a.request_id});
  }
  return aligned(rows);
}

std::string render_audit_json(const std::vector<audit_record>& records) {
  std::vector<std::string> objects;
  for (const auto& a : records) {
    objects.push_back(a.json);
  }
  return json_array(objects);
}

std::string render_host_json(const schema::host& h, const std::optional<std::string>& key_file) {
  auto j = public_json(h);
  if (key_file) {
    j["private_key_file"] = *key_file;
  }
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string render_hosts_json(const std::vector<schema::host>& hosts) {
  auto j = nlohmann::ordered_json::array();
  for (const auto& h : hosts) {
    j.push_back(public_json(h));
  }
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string render_doctor(const doctor_report& report) {
  std::size_t width = 0;
  for (const auto& c : report.checks) {
    width = std::max(width, c.name.size());
  }
  std::string out;
  for (const auto& c : report.checks) {
    char latency[32];
    std::snprintf(latency, sizeof latency, "%.1f ms", c.latency_ms);
    out += c.name + std::string(width - c.name.size() + 2, ' ') + (c.ok ? "ok" : "fail") + "  (" +
           latency + ")";
    if (!c.detail.empty()) {
      out += "  " + c.detail;
    }
    out += "\n";
    if (!c.hint.empty() && !c.ok) {
      out += std::string(width + 2, ' ') + "hint: " + c.hint + "\n";
    }
  }
  out += "provider: " + (report.active_provider.empty() ? "-" : report.active_provider) + "\n";
  out += report.ok ? "all checks passed\n" : "some checks failed\n";
  return out;
}

std::string render_progress(schema::host_status status) {
  return "  " + std::string(schema::to_string(status)) + "\n";
}

}  // namespace litterbox::client::cli
