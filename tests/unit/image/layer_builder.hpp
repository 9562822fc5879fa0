#pragma once

#include "base/secret.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace litterbox::hypervisor::image::testing {

/// One tar entry of a layer a test builds.
struct tar_entry {
  enum kind { file, dir, symlink, hardlink };
  kind type = file;
  std::string path;
  std::string content;  ///< file data, or the target of a symlink / hard link
  unsigned mode = 0644;
  std::int64_t uid = 0;
  std::int64_t gid = 0;
};

inline tar_entry file(std::string path, std::string content = "data", unsigned mode = 0644) {
  return {tar_entry::file, std::move(path), std::move(content), mode, 0, 0};
}
inline tar_entry dir(std::string path, unsigned mode = 0755) {
  return {tar_entry::dir, std::move(path), "", mode, 0, 0};
}
inline tar_entry symlink(std::string path, std::string target) {
  return {tar_entry::symlink, std::move(path), std::move(target), 0777, 0, 0};
}
inline tar_entry hardlink(std::string path, std::string target) {
  return {tar_entry::hardlink, std::move(path), std::move(target), 0644, 0, 0};
}

/// Writes `entries` as a gzip-compressed pax tar to `out` and returns "sha256:<hex>" of the
/// file, the way a registry names a layer blob.
inline std::string write_layer(const std::filesystem::path& out,
                               const std::vector<tar_entry>& entries) {
  archive* a = archive_write_new();
  archive_write_add_filter_gzip(a);
  // No time in the gzip header: the same entries must give the same blob (and digest) no
  // matter when they are written, as tests rebuild layers to find them in a registry.
  archive_write_set_filter_option(a, "gzip", "timestamp", nullptr);
  archive_write_set_format_pax_restricted(a);
  if (archive_write_open_filename(a, out.c_str()) != ARCHIVE_OK) {
    throw std::runtime_error("cannot write layer");
  }
  for (const auto& e : entries) {
    archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname(entry, e.path.c_str());
    archive_entry_set_uid(entry, e.uid);
    archive_entry_set_gid(entry, e.gid);
    archive_entry_set_mtime(entry, 1700000000, 0);
    archive_entry_set_perm(entry, e.mode);
    switch (e.type) {
      case tar_entry::file:
        archive_entry_set_filetype(entry, AE_IFREG);
        archive_entry_set_size(entry, static_cast<la_int64_t>(e.content.size()));
        break;
      case tar_entry::dir:
        archive_entry_set_filetype(entry, AE_IFDIR);
        break;
      case tar_entry::symlink:
        archive_entry_set_filetype(entry, AE_IFLNK);
        archive_entry_set_symlink(entry, e.content.c_str());
        break;
      case tar_entry::hardlink:
        archive_entry_set_filetype(entry, AE_IFREG);
        archive_entry_set_hardlink(entry, e.content.c_str());
        break;
    }
    archive_write_header(a, entry);
    if (e.type == tar_entry::file && !e.content.empty()) {
      archive_write_data(a, e.content.data(), e.content.size());
    }
    archive_entry_free(entry);
  }
  archive_write_close(a);
  archive_write_free(a);
  std::ifstream in(out, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return "sha256:" + sha256_hex(ss.str());
}

/// The smallest root filesystem the store accepts as a guest.
inline std::vector<tar_entry> minimal_guest() {
  return {dir("usr"),
          dir("usr/lib"),
          dir("usr/lib/systemd"),
          file("usr/lib/systemd/systemd", "#!init", 0755),
          dir("usr/sbin"),
          symlink("sbin", "usr/sbin"),
          symlink("usr/sbin/init", "../lib/systemd/systemd"),
          file("usr/sbin/sshd", "sshd", 0755),
          dir("usr/bin"),
          file("usr/bin/cloud-init", "ci", 0755),
          symlink("lib", "usr/lib"),
          dir("etc"),
          file("etc/hostname", "guest\n")};
}

/// A fresh directory under the system temp dir, removed by the destructor.
class temp_dir {
 public:
  temp_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "lb-image-test-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      throw std::runtime_error("mkdtemp failed");
    }
    path_ = tmpl;
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace litterbox::hypervisor::image::testing
