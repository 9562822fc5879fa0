#include "base/process.hpp"
#include "cloud-init/errc.hpp"
#include "cloud-init/seed.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <system_error>
#include <unistd.h>

namespace litterbox::cloudinit {
namespace fs = std::filesystem;
namespace {

error failed(std::string what) {
  return make_error(errc::seed_build_failed, std::move(what));
}

// Creates `path` 0600 from the start: the seed holds the guest's private host key.
bool write_private(const fs::path& path, std::string_view data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return false;
  }
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n <= 0) {
      ::close(fd);
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return ::close(fd) == 0;
}

class scratch_dir {
 public:
  explicit scratch_dir(fs::path p) : path_(std::move(p)) {}
  ~scratch_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

}  // namespace

result<void> write_seed_image(const seed_files& files, const fs::path& out,
                              std::chrono::milliseconds timeout) {
  std::string tmpl = (out.parent_path() / (out.filename().string() + ".XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return failed("cannot create a scratch directory next to the seed");
  }
  const scratch_dir dir{fs::path(tmpl)};
  if (!write_private(dir.path() / "user-data", files.user_data) ||
      !write_private(dir.path() / "meta-data", files.meta_data)) {
    return failed("cannot write the seed files");
  }
  const fs::path partial = out.string() + ".partial";
  std::error_code ec;
  fs::remove(partial, ec);
  // genisoimage creates its output with the umask; create it 0600 first so it never exists
  // with wider permissions.
  if (!write_private(partial, "")) {
    return failed("cannot create the seed image");
  }
  const auto r = run_process(
      {"genisoimage", "-quiet", "-output", partial.string(), "-volid", "cidata", "-joliet", "-rock",
       (dir.path() / "user-data").string(), (dir.path() / "meta-data").string()},
      timeout);
  if (!r || r->timed_out || r->exit_code != 0) {
    fs::remove(partial, ec);
    if (!r) {
      return failed(r.error().message);
    }
    if (r->timed_out) {
      return failed("genisoimage did not finish in time");
    }
    return failed("genisoimage failed: " + r->err.substr(0, 512));
  }
  ::chmod(partial.c_str(), 0600);
  fs::rename(partial, out, ec);
  if (ec) {
    fs::remove(partial, ec);
    return failed("cannot move the seed image into place");
  }
  return {};
}

}  // namespace litterbox::cloudinit
