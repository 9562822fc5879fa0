#include "hypervisor/libvirt/save_image.hpp"

#include "hypervisor/errc.hpp"
#include "hypervisor/libvirt/domain_xml.hpp"

#include <arpa/inet.h>
#include <array>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

namespace litterbox::hypervisor {
namespace fs = std::filesystem;
namespace {

constexpr std::string_view k_magic = "LibvirtQemudSave";
constexpr std::string_view k_partial = "LibvirtQemudPart";
constexpr std::uint32_t k_version = 2;
// libvirt writes the XML plus 64 KiB of slack; anything far larger is not one of its headers.
constexpr std::uint32_t k_max_data_len = 16U << 20U;

std::uint32_t u32_at(std::string_view bytes, std::size_t offset) {
  std::uint32_t v = 0;
  std::memcpy(&v, bytes.data() + offset, sizeof v);
  return v;
}

void put_u32(std::string& out, std::size_t offset, std::uint32_t v) {
  std::memcpy(out.data() + offset, &v, sizeof v);
}

error bad_image(std::string what) {
  return make_error(errc::template_missing, "the template's state file " + what);
}

std::string_view until_nul(std::string_view s) {
  return s.substr(0, std::min(s.find('\0'), s.size()));
}

std::size_t count(std::string_view haystack, std::string_view needle) {
  std::size_t n = 0;
  for (auto p = haystack.find(needle); p != std::string_view::npos;
       p = haystack.find(needle, p + needle.size())) {
    ++n;
  }
  return n;
}

// Replaces the single occurrence of `from` in `xml`; false if it occurs zero or several times.
bool replace_once(std::string& xml, std::string_view from, std::string_view to) {
  if (from.empty() || count(xml, from) != 1) {
    return false;
  }
  xml.replace(xml.find(from), from.size(), to);
  return true;
}

error unclonable(std::string what) {
  return make_error(errc::vm_create_failed, "the template's saved domain XML " + what);
}

}  // namespace

result<save_image_head> parse_save_head(std::string_view bytes) {
  if (bytes.size() < k_save_header_size) {
    return bad_image("is shorter than a libvirt save header");
  }
  const std::string_view magic = bytes.substr(0, k_magic.size());
  if (magic == k_partial) {
    return bad_image("is incomplete (libvirt did not finish the save)");
  }
  if (magic != k_magic) {
    return bad_image("is not a libvirt QEMU save image");
  }
  save_image_head h;
  h.version = u32_at(bytes, 16);
  h.data_len = u32_at(bytes, 20);
  h.was_running = u32_at(bytes, 24);
  h.compressed = u32_at(bytes, 28);
  const std::uint32_t cookie_offset = u32_at(bytes, 32);
  if (h.version != k_version) {
    return bad_image("has save image version " + std::to_string(h.version) + ", not 2");
  }
  if (h.compressed != 0) {
    return bad_image("is compressed; clones are made from raw images only");
  }
  if (h.data_len == 0 || h.data_len > k_max_data_len || cookie_offset >= h.data_len) {
    return bad_image("has an implausible header");
  }
  if (bytes.size() < h.stream_offset()) {
    return bad_image("ends inside its domain XML");
  }
  const std::string_view data = bytes.substr(k_save_header_size, h.data_len);
  const std::size_t xml_len = cookie_offset != 0 ? cookie_offset : h.data_len;
  h.xml = std::string(until_nul(data.substr(0, xml_len)));
  if (cookie_offset != 0) {
    h.cookie = std::string(until_nul(data.substr(cookie_offset)));
    h.has_cookie = true;
  }
  if (h.xml.rfind("<domain", 0) != 0) {
    return bad_image("carries no domain XML");
  }
  return h;
}

result<save_image_head> read_save_head(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return bad_image("cannot be opened: " + std::string(std::strerror(errno)));
  }
  std::string bytes(k_save_header_size, '\0');
  auto read_at = [fd](std::string& buf, std::size_t from) {
    std::size_t done = from;
    while (done < buf.size()) {
      const ssize_t n = ::pread(fd, buf.data() + done, buf.size() - done, static_cast<off_t>(done));
      if (n <= 0) {
        return false;
      }
      done += static_cast<std::size_t>(n);
    }
    return true;
  };
  bool ok = read_at(bytes, 0);
  if (ok) {
    const std::uint32_t data_len = u32_at(bytes, 20);
    if (data_len > 0 && data_len <= k_max_data_len) {
      bytes.resize(k_save_header_size + data_len);
      ok = read_at(bytes, k_save_header_size);
    }
  }
  ::close(fd);
  if (!ok) {
    return bad_image("is truncated");
  }
  return parse_save_head(bytes);
}

result<std::string> render_save_head(const save_image_head& saved, std::string_view xml) {
  const std::size_t xml_len = xml.size() + 1;
  const std::size_t cookie_len = saved.has_cookie ? saved.cookie.size() + 1 : 0;
  if (xml.find('\0') != std::string_view::npos || xml_len + cookie_len > saved.data_len) {
    return make_error(errc::vm_create_failed,
                      "the clone's domain XML does not fit in the template's save header");
  }
  std::string out(saved.stream_offset(), '\0');
  std::memcpy(out.data(), k_magic.data(), k_magic.size());
  put_u32(out, 16, saved.version);
  put_u32(out, 20, saved.data_len);
  put_u32(out, 24, saved.was_running);
  put_u32(out, 28, saved.compressed);
  put_u32(out, 32, saved.has_cookie ? static_cast<std::uint32_t>(xml_len) : 0U);
  std::memcpy(out.data() + k_save_header_size, xml.data(), xml.size());
  if (saved.has_cookie) {
    std::memcpy(out.data() + k_save_header_size + xml_len, saved.cookie.data(),
                saved.cookie.size());
  }
  return out;
}

result<std::string> clone_domain_xml(std::string_view saved_xml, const clone_names& n) {
  in_addr addr{};
  if (::inet_pton(AF_INET, n.ssh_host.c_str(), &addr) != 1 || n.ssh_port <= 0 ||
      n.ssh_port > 65535) {
    return make_error(errc::vm_create_failed, "the clone's SSH forward is not IPv4 address:port");
  }
  if (n.name.empty() || n.uuid.empty() || n.host_id.empty() || n.template_id.empty()) {
    return make_error(errc::vm_create_failed, "a clone needs a name, uuid and host id");
  }
  std::string x(saved_xml);
  const auto name_open = x.find("<name>");
  const auto name_close = x.find("</name>");
  if (name_open == std::string::npos || name_close == std::string::npos || name_close < name_open) {
    return unclonable("has no domain name");
  }
  const std::string old_name = x.substr(name_open + 6, name_close - name_open - 6);
  const auto uuid_open = x.find("<uuid>");
  const auto uuid_close = x.find("</uuid>");
  if (uuid_open == std::string::npos || uuid_close == std::string::npos || uuid_close < uuid_open) {
    return unclonable("has no uuid");
  }
  const std::string old_uuid = x.substr(uuid_open + 6, uuid_close - uuid_open - 6);

  if (!replace_once(x, "<name>" + old_name + "</name>",
                    "<name>" + xml_escape(n.name) + "</name>")) {
    return unclonable("names the domain more than once");
  }
  if (!replace_once(x, "<uuid>" + old_uuid + "</uuid>",
                    "<uuid>" + xml_escape(n.uuid) + "</uuid>")) {
    return unclonable("carries its uuid more than once");
  }
  // libvirt re-serialises our metadata with its own prefix: rename the element by its local
  // name, opening tag (with the value) first, then the closing tag.
  if (!replace_once(x, "template-id>" + xml_escape(n.template_id) + "</",
                    "host-id>" + xml_escape(n.host_id) + "</") ||
      !replace_once(x, "template-id>", "host-id>")) {
    return unclonable("lacks the template's metadata");
  }
  const std::string old_disk = "'" + xml_escape(n.template_disk.string()) + "'";
  if (count(x, old_disk) != 1) {
    return unclonable("does not name the template's disk exactly once");
  }
  // The clone's overlay has the template's disk as backing file: whatever chain libvirt
  // recorded for the template's disk would skip that layer, so libvirt must probe it anew.
  const auto disk_at = x.find(old_disk);
  const auto disk_open = x.rfind("<disk", disk_at);
  const auto disk_close = x.find("</disk>", disk_at);
  if (disk_open == std::string::npos || disk_close == std::string::npos) {
    return unclonable("has a malformed disk element");
  }
  std::string element = x.substr(disk_open, disk_close - disk_open);
  if (const auto b = element.find("<backingStore"); b != std::string::npos) {
    const auto last = element.rfind("</backingStore>");
    const auto self_close = element.find("/>", b);
    const auto end = last != std::string::npos && last > b
                         ? last + std::string_view("</backingStore>").size()
                         : self_close + 2;
    if (end < b || end > element.size()) {
      return unclonable("has a malformed backingStore");
    }
    element.erase(b, end - b);
  }
  element.replace(element.find(old_disk), old_disk.size(), "'" + xml_escape(n.disk.string()) + "'");
  x.replace(disk_open, disk_close - disk_open, element);
  // libvirt lists a file serial once as <serial> and once as its <console>.
  const std::string old_console = "'" + xml_escape(n.template_console.string()) + "'";
  const std::string new_console = "'" + xml_escape(n.console.string()) + "'";
  if (count(x, old_console) == 0) {
    return unclonable("does not name the template's console");
  }
  for (auto p = x.find(old_console); p != std::string::npos;
       p = x.find(old_console, p + new_console.size())) {
    x.replace(p, old_console.size(), new_console);
  }
  constexpr std::string_view k_fwd = "hostfwd=tcp:";
  constexpr std::string_view k_fwd_end = "-:22";
  if (count(x, k_fwd) != 1) {
    return unclonable("does not carry exactly one SSH forward");
  }
  const auto fwd = x.find(k_fwd);
  const auto fwd_end = x.find(k_fwd_end, fwd);
  if (fwd_end == std::string::npos) {
    return unclonable("has a malformed SSH forward");
  }
  x.replace(fwd + k_fwd.size(), fwd_end - fwd - k_fwd.size(),
            xml_escape(n.ssh_host) + ":" + std::to_string(n.ssh_port));
  // The proxy NIC: only its host-side name differs; MAC, model and slot are every guest's.
  if (!n.template_tap.empty()) {
    if (n.tap.empty() || !replace_once(x, "<target dev='" + xml_escape(n.template_tap) + "'",
                                       "<target dev='" + xml_escape(n.tap) + "'")) {
      return unclonable("does not name the template's proxy tap exactly once");
    }
    if (x.find(n.template_tap) != std::string::npos) {
      return unclonable("names the template's proxy tap where it cannot be replaced");
    }
  }
  // Nothing of the template guest's own identity may be left for the clone to collide with.
  if (x.find(old_uuid) != std::string::npos || x.find(">" + old_name + "<") != std::string::npos ||
      x.find("template-id") != std::string::npos) {
    return unclonable("names the template guest where it cannot be replaced");
  }
  return x;
}

}  // namespace litterbox::hypervisor
