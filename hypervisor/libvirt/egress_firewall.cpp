#include "hypervisor/libvirt/egress_firewall.hpp"

#include "hypervisor/errc.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <netinet/in.h>
#include <poll.h>
#include <sstream>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace litterbox::hypervisor {
namespace fs = std::filesystem;

namespace {

constexpr std::string_view k_jump_comment = "litterbox-guest-egress";
constexpr std::string_view k_legacy_comment = "litterbox-guest-isolation";

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

std::vector<std::string_view> lines_of(std::string_view text) {
  std::vector<std::string_view> out;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    out.push_back(text.substr(0, nl));
    if (nl == std::string_view::npos) {
      break;
    }
    text.remove_prefix(nl + 1);
  }
  return out;
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

error config_error(std::string message) {
  return make_error(errc::internal, std::move(message));
}

std::string chain_rule(std::string_view match, std::string_view target,
                       std::string_view chain = k_egress_chain) {
  std::string line = "-A ";
  line += chain;
  if (!match.empty()) {
    line += ' ';
    line += match;
  }
  line += " -j ";
  line += target;
  return line;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string tool(ip_family family, std::string_view name) {
  return std::string(family == ip_family::v4 ? "ip" : "ip6") + std::string(name);
}

std::string_view family_name(ip_family family) {
  return family == ip_family::v4 ? "IPv4" : "IPv6";
}

}  // namespace

std::string cidr::text() const {
  std::array<char, INET6_ADDRSTRLEN> buf{};
  const int af = family == ip_family::v4 ? AF_INET : AF_INET6;
  ::inet_ntop(af, bytes.data(), buf.data(), buf.size());
  return std::string(buf.data()) + "/" + std::to_string(prefix);
}

result<cidr> parse_cidr(std::string_view text) {
  text = trim(text);
  const auto slash = text.find('/');
  const std::string address(text.substr(0, slash));
  cidr out;
  int max_prefix = 32;
  if (::inet_pton(AF_INET, address.c_str(), out.bytes.data()) == 1) {
    out.family = ip_family::v4;
  } else if (::inet_pton(AF_INET6, address.c_str(), out.bytes.data()) == 1) {
    out.family = ip_family::v6;
    max_prefix = 128;
  } else {
    return config_error("\"" + std::string(text) + "\" is not an IPv4 or IPv6 address block");
  }
  out.prefix = max_prefix;
  if (slash != std::string_view::npos) {
    const auto digits = text.substr(slash + 1);
    int prefix = -1;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    if (digits.empty() || ec != std::errc{} || end != digits.data() + digits.size() || prefix < 0 ||
        prefix > max_prefix) {
      return config_error("\"" + std::string(text) + "\" has no prefix length between 0 and " +
                          std::to_string(max_prefix));
    }
    out.prefix = prefix;
  }
  for (int bit = out.prefix; bit < max_prefix; ++bit) {
    const auto byte = static_cast<std::size_t>(bit / 8);
    if ((out.bytes[byte] & (0x80U >> static_cast<unsigned>(bit % 8))) != 0) {
      return config_error("\"" + std::string(text) + "\" has host bits set below /" +
                          std::to_string(out.prefix));
    }
  }
  return out;
}

result<std::vector<egress_entry>> parse_egress_policy(std::string_view text) {
  std::vector<egress_entry> out;
  if (trim(text).empty()) {
    return out;
  }
  while (true) {
    const auto comma = text.find(',');
    const auto item = trim(text.substr(0, comma));
    const auto eq = item.find('=');
    const auto verb = trim(item.substr(0, eq));
    if (eq == std::string_view::npos || (verb != "allow" && verb != "deny")) {
      return config_error("LITTERBOX_GUEST_EGRESS entry \"" + std::string(item) +
                          "\" is not allow=CIDR or deny=CIDR");
    }
    auto block = parse_cidr(item.substr(eq + 1));
    if (!block) {
      return config_error("LITTERBOX_GUEST_EGRESS entry \"" + std::string(item) +
                          "\": " + block.error().message);
    }
    out.push_back({verb == "allow", *block});
    if (comma == std::string_view::npos) {
      return out;
    }
    text.remove_prefix(comma + 1);
  }
}

std::vector<cidr> default_denied(ip_family family) {
  static const std::vector<std::string_view> v4{
      "0.0.0.0/8",        // "this network"
      "10.0.0.0/8",       // private (RFC 1918)
      "100.64.0.0/10",    // shared address space, carrier-grade NAT
      "127.0.0.0/8",      // loopback (slirp's 10.0.2.2 is the host's loopback)
      "169.254.0.0/16",   // link-local: cloud metadata services
      "172.16.0.0/12",    // private
      "192.0.0.0/24",     // IETF protocol assignments
      "192.0.2.0/24",     // documentation (TEST-NET-1)
      "192.88.99.0/24",   // 6to4 relay anycast (deprecated)
      "192.168.0.0/16",   // private
      "198.18.0.0/15",    // benchmarking
      "198.51.100.0/24",  // documentation (TEST-NET-2)
      "203.0.113.0/24",   // documentation (TEST-NET-3)
      "224.0.0.0/4",      // multicast
      "240.0.0.0/4",      // reserved, and the limited broadcast address
  };
  static const std::vector<std::string_view> v6{
      "::/128",          // unspecified
      "::1/128",         // loopback
      "::ffff:0:0/96",   // IPv4-mapped
      "64:ff9b:1::/48",  // local-use NAT64
      "100::/64",        // discard-only
      "2001:db8::/32",   // documentation
      "fc00::/7",        // unique local (private), fd00:ec2::254 is a metadata service
      "fe80::/10",       // link-local
      "fec0::/10",       // site-local (deprecated)
      "ff00::/8",        // multicast
  };
  std::vector<cidr> out;
  for (const auto text : family == ip_family::v4 ? v4 : v6) {
    out.push_back(parse_cidr(text).value());
  }
  return out;
}

std::vector<cidr> parse_resolv_conf(std::string_view text) {
  std::vector<cidr> out;
  for (auto line : lines_of(text)) {
    line = trim(line);
    if (!starts_with(line, "nameserver") || line.size() < 11 ||
        (line[10] != ' ' && line[10] != '\t')) {
      continue;
    }
    auto address = trim(line.substr(11));
    address = address.substr(0, address.find_first_of(" \t#;"));
    address = address.substr(0, address.find('%'));
    if (address.find('/') != std::string_view::npos) {
      continue;
    }
    if (auto block = parse_cidr(address);
        block && std::find(out.begin(), out.end(), *block) == out.end()) {
      out.push_back(*block);
    }
  }
  return out;
}

std::vector<std::string> render_chain(const egress_policy& policy, ip_family family) {
  std::vector<std::string> out;
  // Replies on connections already allowed (and the SSH forward's, which the host opens).
  out.push_back(chain_rule("-m conntrack --ctstate RELATED,ESTABLISHED", "RETURN"));
  if (!policy.internet) {
    out.push_back(chain_rule("", k_reject_chain));
    return out;
  }
  // QEMU's DNS forwarder (10.0.2.3 in the guest) sends the guest's queries to the host's
  // resolvers, which are often private or loopback addresses: only port 53 stays open there.
  for (const auto& r : policy.resolvers) {
    if (r.family != family) {
      continue;
    }
    out.push_back(chain_rule("-d " + r.text() + " -p udp -m udp --dport 53", "RETURN"));
    out.push_back(chain_rule("-d " + r.text() + " -p tcp -m tcp --dport 53", "RETURN"));
  }
  // This host's own addresses are never reachable, whatever the operator allows.
  out.push_back(chain_rule("-m addrtype --dst-type LOCAL", k_reject_chain));
  if (family == ip_family::v4) {
    out.push_back(chain_rule("-m addrtype --dst-type BROADCAST", k_reject_chain));
  }
  for (const auto& e : policy.entries) {
    if (e.block.family == family) {
      out.push_back(chain_rule("-d " + e.block.text(), e.allow ? "RETURN" : k_reject_chain));
    }
  }
  for (const auto& block : default_denied(family)) {
    out.push_back(chain_rule("-d " + block.text(), k_reject_chain));
  }
  return out;
}

std::vector<std::string> render_reject_chain() {
  return {chain_rule("-p tcp", "REJECT --reject-with tcp-reset", k_reject_chain),
          chain_rule("", "REJECT", k_reject_chain)};
}

std::string render_jump(unsigned uid) {
  return "-A OUTPUT -m owner --uid-owner " + std::to_string(uid) + " -m comment --comment " +
         std::string(k_jump_comment) + " -j " + std::string(k_egress_chain);
}

std::string render_restore(const egress_policy& policy, ip_family family,
                           const std::vector<unsigned>& uids,
                           const std::vector<std::string>& stale_output_rules) {
  std::string out = "*filter\n";
  for (const auto chain : {k_egress_chain, k_reject_chain}) {
    out += ":" + std::string(chain) + " - [0:0]\n";
  }
  for (const auto& rule : render_reject_chain()) {
    out += rule + "\n";
  }
  for (const auto& rule : render_chain(policy, family)) {
    out += rule + "\n";
  }
  for (const auto& rule : stale_output_rules) {
    out += "-D" + rule.substr(2) + "\n";
  }
  // The jumps go first: a rule above them that accepts would let guests past the chain.
  // Each is inserted at the top, so the last one inserted comes first.
  for (auto it = uids.rbegin(); it != uids.rend(); ++it) {
    const std::string jump = render_jump(*it);
    out += "-I OUTPUT 1" + jump.substr(std::string_view("-A OUTPUT").size()) + "\n";
  }
  out += "COMMIT\n";
  return out;
}

std::vector<std::string> our_output_rules(std::string_view listing) {
  std::vector<std::string> out;
  const std::string jump_target = " -j " + std::string(k_egress_chain);
  const std::string legacy = "--comment " + std::string(k_legacy_comment) + " ";
  for (auto line : lines_of(listing)) {
    line = trim(line);
    if (!starts_with(line, "-A OUTPUT ")) {
      continue;
    }
    if (ends_with(line, jump_target) || line.find(legacy) != std::string_view::npos) {
      out.emplace_back(line);
    }
  }
  return out;
}

namespace {

std::string uid_list(const std::vector<unsigned>& uids) {
  std::string out;
  for (const auto uid : uids) {
    out += (out.empty() ? "" : ", ") + std::to_string(uid);
  }
  return out;
}

}  // namespace

std::optional<std::string> jump_problem(std::string_view listing,
                                        const std::vector<unsigned>& uids) {
  const std::string jump_target = " -j " + std::string(k_egress_chain);
  std::vector<unsigned> missing = uids;
  for (auto line : lines_of(listing)) {
    line = trim(line);
    if (missing.empty()) {
      break;
    }
    if (!starts_with(line, "-A OUTPUT ")) {
      continue;
    }
    const auto found = std::find_if(missing.begin(), missing.end(), [&](unsigned uid) {
      return line.find("--uid-owner " + std::to_string(uid) + " ") != std::string_view::npos;
    });
    if (!ends_with(line, jump_target) || found == missing.end()) {
      return "OUTPUT has \"" + std::string(line.substr(0, 200)) + "\" before the jump for uid " +
             uid_list(missing);
    }
    missing.erase(found);
  }
  if (!missing.empty()) {
    return "OUTPUT has no jump to " + std::string(k_egress_chain) + " for uid " + uid_list(missing);
  }
  return std::nullopt;
}

std::optional<std::string> qemu_conf_user(std::string_view text) {
  std::optional<std::string> user;
  for (auto line : lines_of(text)) {
    line = trim(line);
    if (!starts_with(line, "user")) {
      continue;
    }
    auto rest = trim(line.substr(4));
    if (rest.empty() || rest.front() != '=') {
      continue;
    }
    rest = trim(rest.substr(1));
    if (rest.size() >= 2 && rest.front() == '"') {
      const auto close = rest.find('"', 1);
      if (close != std::string_view::npos) {
        user = std::string(rest.substr(1, close - 1));
      }
    }
  }
  return user;
}

std::optional<unsigned> status_uid(std::string_view text) {
  for (auto line : lines_of(text)) {
    if (!starts_with(line, "Uid:")) {
      continue;
    }
    const auto digits = trim(line.substr(4));
    unsigned uid = 0;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), uid);
    if (ec != std::errc{} || end == digits.data()) {
      return std::nullopt;
    }
    return uid;
  }
  return std::nullopt;
}

std::optional<std::string> qemu_cmdline_domain(std::string_view cmdline) {
  std::vector<std::string_view> args;
  while (!cmdline.empty()) {
    const auto nul = cmdline.find('\0');
    args.push_back(cmdline.substr(0, nul));
    if (nul == std::string_view::npos) {
      break;
    }
    cmdline.remove_prefix(nul + 1);
  }
  if (args.empty() ||
      fs::path(std::string(args.front())).filename().string().find("qemu") == std::string::npos) {
    return std::nullopt;
  }
  for (std::size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] != "-name") {
      continue;
    }
    auto value = args[i + 1];
    if (starts_with(value, "guest=")) {
      value.remove_prefix(6);
    }
    // libvirt doubles commas in the name; the first single comma ends it.
    std::string name;
    for (std::size_t k = 0; k < value.size(); ++k) {
      if (value[k] == ',') {
        if (k + 1 < value.size() && value[k + 1] == ',') {
          name += ',';
          ++k;
          continue;
        }
        break;
      }
      name += value[k];
    }
    return name.empty() ? std::nullopt : std::optional<std::string>(name);
  }
  return std::nullopt;
}

std::vector<qemu_process> running_qemu_processes() {
  std::vector<qemu_process> out;
  std::error_code ec;
  for (fs::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    int pid = 0;
    const auto [p, perr] = std::from_chars(name.data(), name.data() + name.size(), pid);
    if (perr != std::errc{} || p != name.data() + name.size()) {
      continue;
    }
    const auto domain = qemu_cmdline_domain(read_file(it->path() / "cmdline"));
    if (!domain) {
      continue;
    }
    const auto uid = status_uid(read_file(it->path() / "status"));
    if (uid) {
      out.push_back({pid, *uid, *domain});
    }
  }
  return out;
}

probe_outcome probe_local_connect(ip_family family, unsigned uid, unsigned gid,
                                  std::chrono::milliseconds timeout) {
  const int af = family == ip_family::v4 ? AF_INET : AF_INET6;
  const int listener = ::socket(af, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) {
    return probe_outcome::unavailable;
  }
  sockaddr_storage addr{};
  socklen_t len = 0;
  if (family == ip_family::v4) {
    auto* a = reinterpret_cast<sockaddr_in*>(&addr);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof(sockaddr_in);
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    len = sizeof(sockaddr_in6);
  }
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      ::listen(listener, 4) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(listener);
    return probe_outcome::unavailable;
  }
  const int ms = static_cast<int>(std::max<long long>(1, timeout.count()));
  // The child only makes system calls (it may be forked from a multi-threaded process);
  // the raw setres[ug]id calls change this process alone, which is all there is after fork.
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(listener);
    return probe_outcome::unavailable;
  }
  if (pid == 0) {
    if (::syscall(SYS_setgroups, 0, nullptr) != 0 || ::syscall(SYS_setresgid, gid, gid, gid) != 0 ||
        ::syscall(SYS_setresuid, uid, uid, uid) != 0) {
      ::_exit(3);
    }
    const int fd = ::socket(af, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      ::_exit(3);
    }
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), len) == 0) {
      ::_exit(0);
    }
    if (errno != EINPROGRESS) {
      ::_exit(1);
    }
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, ms) != 1) {
      ::_exit(1);
    }
    int err = 0;
    socklen_t err_len = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len);
    ::_exit(err == 0 ? 0 : 1);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  ::close(listener);
  if (!WIFEXITED(status)) {
    return probe_outcome::unavailable;
  }
  switch (WEXITSTATUS(status)) {
    case 0:
      return probe_outcome::connected;
    case 1:
      return probe_outcome::refused;
    default:
      return probe_outcome::unavailable;
  }
}

iptables_egress_firewall::iptables_egress_firewall(egress_policy policy, std::string resolv_conf,
                                                   command_runner run,
                                                   std::chrono::milliseconds tool_timeout)
    : policy_(std::move(policy)),
      resolv_conf_(std::move(resolv_conf)),
      run_(run ? std::move(run)
               : command_runner(
                     [](const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
                       return run_process(argv, timeout);
                     })),
      tool_timeout_(tool_timeout) {
  std::error_code ec;
  ipv6_ = fs::exists("/proc/net/if_inet6", ec);
}

std::vector<ip_family> iptables_egress_firewall::families() const {
  if (ipv6_) {
    return {ip_family::v4, ip_family::v6};
  }
  return {ip_family::v4};
}

egress_policy iptables_egress_firewall::policy_with_resolvers() const {
  egress_policy p = policy_;
  if (!resolv_conf_.empty()) {
    for (const auto& r : parse_resolv_conf(read_file(resolv_conf_))) {
      if (std::find(p.resolvers.begin(), p.resolvers.end(), r) == p.resolvers.end()) {
        p.resolvers.push_back(r);
      }
    }
  }
  return p;
}

egress_policy iptables_egress_firewall::current_policy() const {
  const std::lock_guard lock(mutex_);
  return applied_;
}

result<std::string> iptables_egress_firewall::run_tool(const std::vector<std::string>& argv) const {
  auto r = run_(argv, tool_timeout_);
  if (!r) {
    return make_error(errc::unavailable, r.error().message);
  }
  if (r->timed_out) {
    return make_error(errc::unavailable, argv[0] + " did not finish in time");
  }
  if (r->exit_code != 0) {
    return make_error(errc::unavailable, argv[0] + " failed (exit " + std::to_string(r->exit_code) +
                                             "): " + std::string(trim(r->err).substr(0, 300)));
  }
  return std::move(r->out);
}

result<void> iptables_egress_firewall::apply_family(const egress_policy& policy, ip_family family,
                                                    const std::vector<unsigned>& uids) {
  auto listing = run_tool({tool(family, "tables"), "-w", "-S", "OUTPUT"});
  if (!listing) {
    return listing.error();
  }
  const std::string text = render_restore(policy, family, uids, our_output_rules(*listing));
  // iptables-restore reads a file: a private one, removed whatever happens.
  std::string path = (fs::temp_directory_path() / "litterbox-egress-XXXXXX").string();
  const int fd = ::mkstemp(path.data());
  if (fd < 0) {
    return make_error(errc::unavailable,
                      std::string("cannot write the firewall rules: ") + std::strerror(errno));
  }
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                       ::close(fd) == 0;
  if (!written) {
    ::unlink(path.c_str());
    return make_error(errc::unavailable, "cannot write the firewall rules");
  }
  auto restored = run_tool({tool(family, "tables-restore"), "-w", "--noflush", path});
  ::unlink(path.c_str());
  if (!restored) {
    return make_error(errc::unavailable, "cannot install the " + std::string(family_name(family)) +
                                             " guest egress rules: " + restored.error().message);
  }
  return {};
}

result<void> iptables_egress_firewall::apply(const std::vector<unsigned>& uids) {
  const std::lock_guard lock(mutex_);
  const egress_policy policy = policy_with_resolvers();
  for (const auto family : families()) {
    // Another litterboxd on this host (serve and a cron reap) may rebuild the rules between
    // our listing and our restore; the restore then names a rule that is gone and fails as
    // a whole, changing nothing. Listing again resolves that.
    auto ok = apply_family(policy, family, uids);
    for (int attempt = 1; !ok && attempt < 3; ++attempt) {
      ok = apply_family(policy, family, uids);
    }
    if (!ok) {
      return ok.error();
    }
  }
  applied_ = policy;
  return {};
}

firewall_state iptables_egress_firewall::inspect(const std::vector<unsigned>& uids) {
  egress_policy policy;
  {
    const std::lock_guard lock(mutex_);
    policy = policy_with_resolvers();
  }
  firewall_state state;
  for (const auto family : families()) {
    const auto name = std::string(family_name(family)) + ": ";
    auto output = run_tool({tool(family, "tables"), "-w", "-S", "OUTPUT"});
    if (!output) {
      state.detail = name + output.error().message;
      return state;
    }
    if (auto problem = jump_problem(*output, uids)) {
      state.detail = name + *problem;
      return state;
    }
    const std::array<std::pair<std::string_view, std::size_t>, 2> chains{
        {{k_egress_chain, render_chain(policy, family).size()},
         {k_reject_chain, render_reject_chain().size()}}};
    for (const auto& [chain_name, expected] : chains) {
      auto chain = run_tool({tool(family, "tables"), "-w", "-S", std::string(chain_name)});
      if (!chain) {
        state.detail = name + chain.error().message;
        return state;
      }
      std::size_t rules = 0;
      for (const auto line : lines_of(*chain)) {
        rules += starts_with(trim(line), "-A ") ? 1U : 0U;
      }
      if (rules != expected) {
        state.detail = name + std::string(chain_name) + " holds " + std::to_string(rules) +
                       " rules where the policy has " + std::to_string(expected);
        return state;
      }
    }
  }
  state.ok = true;
  state.detail = "OUTPUT sends uid " + uid_list(uids) + " through " + std::string(k_egress_chain) +
                 (ipv6_ ? " first (IPv4 and IPv6)" : " first (IPv4)");
  return state;
}

}  // namespace litterbox::hypervisor
