#include "client/cli/key_store.hpp"

#include "base/uuid.hpp"
#include "client/errc.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace litterbox::client::cli {
namespace {

/// mkdir -p with mode 0700 for every directory it creates.
bool make_private_dirs(const std::filesystem::path& dir) {
  std::filesystem::path current;
  for (const auto& part : dir) {
    current /= part;
    if (::mkdir(current.c_str(), 0700) != 0 && errno != EEXIST) {
      return false;
    }
  }
  return true;
}

}  // namespace

result<key_store> key_store::for_user(const env_lookup& env) {
  if (const auto xdg = env("XDG_DATA_HOME"); xdg && !xdg->empty() && xdg->front() == '/') {
    return key_store(std::filesystem::path(*xdg) / "litterbox" / "keys");
  }
  if (const auto home = env("HOME"); home && !home->empty()) {
    return key_store(std::filesystem::path(*home) / ".local" / "share" / "litterbox" / "keys");
  }
  return make_error(errc::invalid_argument, "neither XDG_DATA_HOME nor HOME is set");
}

result<std::filesystem::path> key_store::save(std::string_view host_id,
                                              std::string_view private_key) const {
  const auto id = parse_uuid(host_id);
  if (!id) {
    return make_error(errc::invalid_argument, "not a host id: " + std::string(host_id));
  }
  if (!make_private_dirs(dir_)) {
    return make_error(errc::invalid_argument,
                      "cannot create " + dir_.string() + ": " + std::strerror(errno));
  }
  const auto final_path = dir_ / *id;
  const auto tmp_path = dir_ / ("." + *id + ".tmp");
  ::unlink(tmp_path.c_str());
  const int fd = ::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return make_error(errc::invalid_argument,
                      "cannot write " + tmp_path.string() + ": " + std::strerror(errno));
  }
  std::string text(private_key);
  if (!text.empty() && text.back() != '\n') {
    text.push_back('\n');  // OpenSSH refuses a private key file without the final newline
  }
  std::size_t done = 0;
  while (done < text.size()) {
    const auto n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      const std::string why = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp_path.c_str());
      return make_error(errc::invalid_argument, "cannot write " + tmp_path.string() + ": " + why);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0 || ::rename(tmp_path.c_str(), final_path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp_path.c_str());
    return make_error(errc::invalid_argument,
                      "cannot store key " + final_path.string() + ": " + why);
  }
  return final_path;
}

std::optional<std::filesystem::path> key_store::find(std::string_view host_id) const {
  const auto id = parse_uuid(host_id);
  if (!id) {
    return std::nullopt;
  }
  auto path = dir_ / *id;
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) {
    return path;
  }
  return std::nullopt;
}

void key_store::remove(std::string_view host_id) const {
  if (const auto id = parse_uuid(host_id)) {
    std::error_code ec;
    std::filesystem::remove(dir_ / *id, ec);
  }
}

}  // namespace litterbox::client::cli
