#pragma once

#include "base/result.hpp"

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace litterbox::hypervisor {

/// libvirt 9.0's QEMU save image (src/qemu/qemu_saveimage.{h,c}, virQEMUSaveDataWrite): a
/// 92-byte header — magic "LibvirtQemudSave", then host-endian uint32 version (2), data_len,
/// was_running, compressed, cookieOffset and 14 unused words — then data_len bytes holding
/// the domain XML (NUL-terminated), the cookie at cookieOffset (NUL-terminated) and zero
/// padding, then QEMU's migration stream up to the end of the file.
inline constexpr std::size_t k_save_header_size = 92;

/// What the header and data block of a save image say.
struct save_image_head {
  std::uint32_t version = 0;
  std::uint32_t data_len = 0;
  std::uint32_t was_running = 0;
  std::uint32_t compressed = 0;  ///< 0: raw, the only format clones are made from
  std::string xml;               ///< without its NUL
  std::string cookie;            ///< without its NUL
  bool has_cookie = false;       ///< cookieOffset was set

  /// Where the migration stream starts.
  std::uint64_t stream_offset() const { return k_save_header_size + data_len; }
};

/// Parses `bytes`, the first stream_offset() bytes (or more) of a save image. Errors:
/// template_missing (not a complete, uncompressed version-2 libvirt save image).
result<save_image_head> parse_save_head(std::string_view bytes);

/// Reads and parses the head of the save image at `path`. Blocks. Errors: template_missing.
result<save_image_head> read_save_head(const std::filesystem::path& path);

/// The header and data block of a save image that is `saved` with `xml` as its domain XML:
/// same data_len (so the migration stream that follows is unchanged), same cookie, zero
/// padding, complete magic. Errors: vm_create_failed when `xml` does not fit in data_len.
result<std::string> render_save_head(const save_image_head& saved, std::string_view xml);

/// What differs between a template's saved domain and one of its clones.
struct clone_names {
  std::string template_id;
  std::filesystem::path template_disk;     ///< the template guest's disk as the XML names it
  std::filesystem::path template_console;  ///< its console file
  std::string host_id;                     ///< the clone's host id (metadata)
  std::string name;                        ///< the clone's domain name
  std::string uuid;                        ///< the clone's domain uuid
  std::filesystem::path disk;              ///< the clone's overlay on the template's disk
  std::filesystem::path console;
  std::string ssh_host;  ///< IPv4 literal
  int ssh_port = 0;
  std::string template_tap;  ///< the template guest's proxy tap ("": it has none)
  std::string tap;           ///< the clone's proxy tap (required when template_tap is set)
};

/// The domain XML of a clone, from the XML libvirt saved for the template guest: name, uuid,
/// metadata (template-id becomes host-id), disk and console paths, the proxy tap and the SSH
/// forward are replaced; every device, address and the machine ABI stay exactly as saved. Pure.
/// Errors: vm_create_failed when the saved XML does not carry each of those exactly once.
result<std::string> clone_domain_xml(std::string_view saved_xml, const clone_names& names);

}  // namespace litterbox::hypervisor
