#include "client/cli/remote.hpp"

#include "base/uuid.hpp"
#include "client/errc.hpp"

#include <libssh/libssh.h>
#include <libssh/sftp.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

namespace litterbox::client::cli {
namespace {

std::vector<std::string> split_words(std::string_view line) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < line.size()) {
    const auto b = line.find_first_not_of(" \t", pos);
    if (b == std::string_view::npos) {
      break;
    }
    const auto e = line.find_first_of(" \t", b);
    out.emplace_back(line.substr(b, e == std::string_view::npos ? line.size() - b : e - b));
    pos = e == std::string_view::npos ? line.size() : e;
  }
  return out;
}

/// Owns a connected, host-key-verified, authenticated libssh session.
class session {
 public:
  session() : s_(ssh_new()) {}
  ~session() {
    if (s_ != nullptr) {
      if (ssh_is_connected(s_) != 0) {
        ssh_disconnect(s_);
      }
      ssh_free(s_);
    }
  }
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  ssh_session get() const { return s_; }

  result<void> open(const ssh_target& t) {
    if (s_ == nullptr) {
      return make_error(errc::ssh, "cannot create an SSH session");
    }
    const auto pinned = parse_known_hosts(t.host.known_hosts);
    if (pinned.empty()) {
      return make_error(errc::host_key_mismatch,
                        "the host has no pinned host key (known_hosts is empty); is it active?");
    }
    // Offer only the pinned key types, so the server presents the key we can check.
    std::string algorithms;
    for (const auto& k : pinned) {
      std::string names = k.type;
      if (k.type == "ssh-rsa") {
        names = "rsa-sha2-512,rsa-sha2-256,ssh-rsa";
      }
      if (algorithms.find(names) == std::string::npos) {
        algorithms += (algorithms.empty() ? "" : ",") + names;
      }
    }
    const int port = t.host.ssh_port;
    const bool no = false;
    const long timeout_s = 30;
    if (ssh_options_set(s_, SSH_OPTIONS_HOST, t.host.ssh_host.c_str()) != SSH_OK ||
        ssh_options_set(s_, SSH_OPTIONS_PORT, &port) != SSH_OK ||
        ssh_options_set(s_, SSH_OPTIONS_USER, t.host.ssh_username.c_str()) != SSH_OK ||
        ssh_options_set(s_, SSH_OPTIONS_PROCESS_CONFIG, &no) != SSH_OK ||
        ssh_options_set(s_, SSH_OPTIONS_KNOWNHOSTS, "/dev/null") != SSH_OK ||
        ssh_options_set(s_, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null") != SSH_OK ||
        ssh_options_set(s_, SSH_OPTIONS_TIMEOUT, &timeout_s) != SSH_OK ||
        ssh_options_set(s_, SSH_OPTIONS_HOSTKEYS, algorithms.c_str()) != SSH_OK) {
      return make_error(errc::ssh, std::string("cannot configure SSH: ") + ssh_get_error(s_));
    }
    const std::string where = t.host.ssh_host + ":" + std::to_string(port);
    if (ssh_connect(s_) != SSH_OK) {
      return make_error(errc::ssh, "cannot connect to " + where + ": " + ssh_get_error(s_));
    }
    if (auto v = verify(pinned, where); !v) {
      return v;
    }
    return authenticate(t, where);
  }

 private:
  result<void> verify(const std::vector<pinned_key>& pinned, const std::string& where) {
    ssh_key server = nullptr;
    if (ssh_get_server_publickey(s_, &server) != SSH_OK || server == nullptr) {
      return make_error(errc::host_key_mismatch, "no host key from " + where);
    }
    bool match = false;
    for (const auto& k : pinned) {
      ssh_key expected = nullptr;
      const auto type = ssh_key_type_from_name(k.type.c_str());
      if (type == SSH_KEYTYPE_UNKNOWN ||
          ssh_pki_import_pubkey_base64(k.blob.c_str(), type, &expected) != SSH_OK) {
        continue;
      }
      match = ssh_key_cmp(server, expected, SSH_KEY_CMP_PUBLIC) == 0;
      ssh_key_free(expected);
      if (match) {
        break;
      }
    }
    ssh_key_free(server);
    if (!match) {
      return make_error(errc::host_key_mismatch,
                        "host key of " + where + " does not match the pinned key; refusing");
    }
    return {};
  }

  result<void> authenticate(const ssh_target& t, const std::string& where) {
    int rc = SSH_AUTH_DENIED;
    if (t.identity) {
      ssh_key key = nullptr;
      if (ssh_pki_import_privkey_file(t.identity->c_str(), nullptr, nullptr, nullptr, &key) !=
          SSH_OK) {
        return make_error(errc::ssh, "cannot read private key " + t.identity->string());
      }
      rc = ssh_userauth_publickey(s_, nullptr, key);
      ssh_key_free(key);
    } else {
      rc = ssh_userauth_publickey_auto(s_, nullptr, nullptr);
    }
    if (rc != SSH_AUTH_SUCCESS) {
      return make_error(errc::ssh, "authentication as " + t.host.ssh_username + " at " + where +
                                       " failed: " + ssh_get_error(s_));
    }
    return {};
  }

  ssh_session s_;
};

bool write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const auto n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return false;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

std::string base_name(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') {
    path.remove_suffix(1);
  }
  const auto slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

/// An initialised SFTP channel on a session.
class sftp {
 public:
  explicit sftp(ssh_session s) : sf_(sftp_new(s)) {}
  ~sftp() {
    if (sf_ != nullptr) {
      sftp_free(sf_);
    }
  }
  sftp(const sftp&) = delete;
  sftp& operator=(const sftp&) = delete;
  result<void> init(ssh_session s) {
    if (sf_ == nullptr || sftp_init(sf_) != SSH_OK) {
      return make_error(errc::ssh, std::string("cannot start SFTP: ") + ssh_get_error(s));
    }
    return {};
  }
  sftp_session get() const { return sf_; }
  bool is_dir(const std::string& path) const {
    sftp_attributes a = sftp_stat(sf_, path.c_str());
    if (a == nullptr) {
      return false;
    }
    const bool dir = a->type == SSH_FILEXFER_TYPE_DIRECTORY;
    sftp_attributes_free(a);
    return dir;
  }

 private:
  sftp_session sf_;
};

}  // namespace

std::vector<pinned_key> parse_known_hosts(std::string_view text) {
  std::vector<pinned_key> out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto nl = text.find('\n', pos);
    if (nl == std::string_view::npos) {
      nl = text.size();
    }
    auto line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    const auto words = split_words(line);
    if (words.size() < 3 || words[0].starts_with('#') || words[0].starts_with('@')) {
      continue;
    }
    out.push_back({words[1], words[2]});
  }
  return out;
}

std::vector<std::string> openssh_argv(const schema::host& h,
                                      const std::filesystem::path& known_hosts_file,
                                      const std::optional<std::filesystem::path>& identity,
                                      const std::vector<std::string>& command) {
  std::vector<std::string> argv{"ssh",
                                "-o",
                                "StrictHostKeyChecking=yes",
                                "-o",
                                "UserKnownHostsFile=" + known_hosts_file.string(),
                                "-o",
                                "GlobalKnownHostsFile=/dev/null",
                                "-o",
                                "UpdateHostKeys=no",
                                "-p",
                                std::to_string(h.ssh_port)};
  if (identity) {
    argv.insert(argv.end(), {"-i", identity->string(), "-o", "IdentitiesOnly=yes"});
  }
  argv.insert(argv.end(), {"-l", h.ssh_username, "--", h.ssh_host});
  argv.insert(argv.end(), command.begin(), command.end());
  return argv;
}

std::string shell_quote(std::string_view word) {
  if (!word.empty() && word.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                              "0123456789_-./=:,+@%") == std::string_view::npos) {
    return std::string(word);
  }
  std::string out = "'";
  for (const char c : word) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  out += "'";
  return out;
}

cp_operand parse_cp_operand(std::string_view text) {
  const auto colon = text.find(':');
  if (colon != std::string_view::npos) {
    if (const auto id = parse_uuid(text.substr(0, colon))) {
      return {*id, std::string(text.substr(colon + 1))};
    }
  }
  return {std::nullopt, std::string(text)};
}

namespace {

/// Copies our stdin into a channel from ssh_event callbacks, then sends EOF once.
struct stdin_pump {
  ssh_channel channel;
  bool done = false;     ///< stdin ended (or failed) and EOF was sent
  bool removed = false;  ///< STDIN_FILENO is no longer in the event
  bool failed = false;   ///< the channel refused data: the connection is gone

  void finish() {
    if (!done) {
      done = true;
      ssh_channel_send_eof(channel);
    }
  }

  static int on_readable(socket_t fd, int /*revents*/, void* self) {
    auto& p = *static_cast<stdin_pump*>(self);
    if (p.done) {
      return 0;
    }
    char buf[32768];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
      return 0;
    }
    if (n <= 0) {
      p.finish();
      return 0;
    }
    // Blocking write: libssh keeps reading the command's output into the channel's buffers
    // while it waits for window space, so a command that writes before it reads cannot
    // deadlock us.
    if (ssh_channel_write(p.channel, buf, static_cast<std::uint32_t>(n)) != n) {
      p.failed = true;
      p.done = true;
    }
    return 0;
  }
};

}  // namespace

result<int> ssh_exec(const ssh_target& target, const std::vector<std::string>& command) {
  session s;
  if (auto r = s.open(target); !r) {
    return r.error();
  }
  std::string line;
  for (const auto& w : command) {
    line += (line.empty() ? "" : " ") + shell_quote(w);
  }
  ssh_channel ch = ssh_channel_new(s.get());
  if (ch == nullptr || ssh_channel_open_session(ch) != SSH_OK ||
      ssh_channel_request_exec(ch, line.c_str()) != SSH_OK) {
    const std::string why = ssh_get_error(s.get());
    if (ch != nullptr) {
      ssh_channel_free(ch);
    }
    return make_error(errc::ssh, "cannot run the command: " + why);
  }
  // Our stdin goes to the command's stdin until it ends; then the remote side sees EOF.
  // The remote command may finish first (it never reads stdin): then we stop at once.
  stdin_pump pump{ch};
  ssh_event event = ssh_event_new();
  ssh_event_add_session(event, s.get());
  if (ssh_event_add_fd(event, STDIN_FILENO, POLLIN, &stdin_pump::on_readable, &pump) != SSH_OK) {
    pump.finish();
  }
  char buf[32768];
  bool failed = false;
  for (;;) {
    bool got = false;
    for (const int is_stderr : {0, 1}) {
      const int n = ssh_channel_read_nonblocking(ch, buf, sizeof buf, is_stderr);
      if (n == SSH_ERROR) {
        failed = true;
        break;
      }
      if (n > 0) {
        got = true;
        write_all(is_stderr != 0 ? STDERR_FILENO : STDOUT_FILENO, buf, static_cast<std::size_t>(n));
      }
    }
    if (failed || pump.failed) {
      failed = true;
      break;
    }
    if (got) {
      continue;
    }
    if (ssh_channel_is_eof(ch) != 0 || ssh_channel_is_closed(ch) != 0) {
      break;
    }
    // Waits for the next packet on either stream (stdout or stderr), for stdin, or for the
    // timeout.
    ssh_event_dopoll(event, 5000);
    if (pump.done && !pump.removed) {
      ssh_event_remove_fd(event, STDIN_FILENO);
      pump.removed = true;
    }
  }
  if (!pump.removed) {
    ssh_event_remove_fd(event, STDIN_FILENO);
  }
  ssh_event_remove_session(event, s.get());
  ssh_event_free(event);
  if (failed) {
    const std::string why = ssh_get_error(s.get());
    ssh_channel_free(ch);
    return make_error(errc::ssh, "connection lost: " + why);
  }
  const int status = ssh_channel_get_exit_status(ch);
  ssh_channel_close(ch);
  ssh_channel_free(ch);
  return status < 0 || status > 255 ? 255 : status;
}

result<void> sftp_upload(const ssh_target& target, const std::filesystem::path& local,
                         std::string remote_path) {
  const int fd = ::open(local.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return make_error(errc::invalid_argument,
                      "cannot read " + local.string() + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return make_error(errc::invalid_argument, local.string() + " is not a regular file");
  }
  session s;
  if (auto r = s.open(target); !r) {
    ::close(fd);
    return r.error();
  }
  sftp sf(s.get());
  if (auto r = sf.init(s.get()); !r) {
    ::close(fd);
    return r.error();
  }
  if (remote_path.empty()) {
    remote_path = ".";
  }
  if (remote_path.back() == '/' || sf.is_dir(remote_path)) {
    remote_path += (remote_path.back() == '/' ? "" : "/") + base_name(local.string());
  }
  sftp_file f =
      sftp_open(sf.get(), remote_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, st.st_mode & 07777U);
  if (f == nullptr) {
    ::close(fd);
    return make_error(errc::ssh,
                      "cannot create " + remote_path + " on the host: " + ssh_get_error(s.get()));
  }
  // Each SFTP write must fit in one packet; libssh caps what it sends per call anyway.
  char buf[16384];
  std::optional<error> failure;
  for (;;) {
    const auto n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      failure = make_error(errc::invalid_argument, "cannot read " + local.string());
      break;
    }
    if (n == 0) {
      break;
    }
    std::size_t done = 0;
    while (done < static_cast<std::size_t>(n)) {
      const auto w = sftp_write(f, buf + done, static_cast<std::size_t>(n) - done);
      if (w <= 0) {
        failure =
            make_error(errc::ssh, "write to " + remote_path + " failed: " + ssh_get_error(s.get()));
        break;
      }
      done += static_cast<std::size_t>(w);
    }
    if (failure) {
      break;
    }
  }
  ::close(fd);
  if (sftp_close(f) != SSH_OK && !failure) {
    failure =
        make_error(errc::ssh, "closing " + remote_path + " failed: " + ssh_get_error(s.get()));
  }
  if (failure) {
    return *failure;
  }
  return {};
}

result<void> sftp_download(const ssh_target& target, const std::string& remote_path,
                           std::filesystem::path local) {
  session s;
  if (auto r = s.open(target); !r) {
    return r.error();
  }
  sftp sf(s.get());
  if (auto r = sf.init(s.get()); !r) {
    return r.error();
  }
  std::error_code ec;
  if (std::filesystem::is_directory(local, ec)) {
    local /= base_name(remote_path);
  }
  sftp_file f = sftp_open(sf.get(), remote_path.c_str(), O_RDONLY, 0);
  if (f == nullptr) {
    return make_error(errc::ssh,
                      "cannot open " + remote_path + " on the host: " + ssh_get_error(s.get()));
  }
  const int fd = ::open(local.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) {
    const std::string why = std::strerror(errno);
    sftp_close(f);
    return make_error(errc::invalid_argument, "cannot write " + local.string() + ": " + why);
  }
  char buf[32768];
  std::optional<error> failure;
  for (;;) {
    const auto n = sftp_read(f, buf, sizeof buf);
    if (n < 0) {
      failure =
          make_error(errc::ssh, "read of " + remote_path + " failed: " + ssh_get_error(s.get()));
      break;
    }
    if (n == 0) {
      break;
    }
    if (!write_all(fd, buf, static_cast<std::size_t>(n))) {
      failure = make_error(errc::invalid_argument,
                           "cannot write " + local.string() + ": " + std::strerror(errno));
      break;
    }
  }
  sftp_close(f);
  if (::close(fd) != 0 && !failure) {
    failure = make_error(errc::invalid_argument, "cannot write " + local.string());
  }
  if (failure) {
    return *failure;
  }
  return {};
}

}  // namespace litterbox::client::cli
