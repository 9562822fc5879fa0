#include "client/cli/app.hpp"

#include "base/clock.hpp"
#include "base/uuid.hpp"
#include "client/cli/key_store.hpp"
#include "client/cli/remote.hpp"
#include "client/cli/render.hpp"
#include "client/client.hpp"
#include "client/duration.hpp"
#include "client/errc.hpp"

#include <nlohmann/json.hpp>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

namespace litterbox::client::cli {
namespace {

constexpr const char* k_exit_codes = R"(Exit codes:
  0    success
  1    usage error or local problem (arguments, files, configuration)
  2    API error (any other error response, or a malformed one)
  3    host not found
  4    authentication failed (token missing or rejected)
  5    provisioning failed (the host went to status error)
  6    service unavailable, unreachable, or a wait timed out
  7    conflict: the host's state forbids the operation
  8    quota or rate limit hit (HTTP 429; the message says when to retry)
  255  SSH failure (connection, authentication, host key mismatch)
  exec and ssh exit with the remote command's exit code.

Configuration: SANDBOX_SERVICE_URL, SANDBOX_SERVICE_TOKEN, SANDBOX_SERVICE_TIMEOUT (seconds,
for create), or the file $LITTERBOX_STATE_DIR/env (default /var/lib/litterbox/env).)";

/// Every option of every command, filled by CLI11.
struct options {
  // create
  std::optional<std::string> image;
  std::vector<std::string> env;
  std::string expires_in;
  bool no_expiry = false;
  std::optional<int> cpus;
  std::optional<int> memory;
  std::optional<int> disk;
  std::optional<std::string> instance_type;
  std::vector<std::string> ssh_key_files;
  std::optional<std::string> idempotency_key;
  bool async = false;
  std::string progress = "auto";
  bool json = false;
  // ls
  std::vector<std::string> statuses;
  std::optional<int> limit;
  bool quiet = false;
  // host commands
  std::string id;
  std::vector<std::string> ids;
  std::vector<std::string> command;
  std::optional<std::size_t> bytes;
  std::string src;
  std::string dst;
  std::string shell;
  // proxy
  std::string proxy_name;
  std::string target;
  std::vector<std::string> header_envs;
  std::vector<std::string> proxy_names;
  // events
  std::optional<std::string> host;
  std::optional<std::int64_t> after;
  std::optional<std::size_t> max_events;
  // keys, audit
  std::string key_namespace;
  std::optional<std::string> key_name;
  std::optional<int> max_hosts;
  std::optional<int> max_cpus;
  std::optional<int> max_memory_mib;
  std::vector<std::string> key_ids;
  std::optional<std::string> audit_namespace;
  std::optional<std::string> audit_after;
};

int fail(const error& e) {
  std::cerr << render_error(e);
  return exit_code_for(e);
}

result<client> make_client() {
  auto cfg = load_config(process_env(), read_whole_file());
  if (!cfg) {
    return cfg.error();
  }
  return client(std::move(*cfg), make_curl_transport());
}

result<std::vector<std::string>> read_public_keys(const std::vector<std::string>& files) {
  std::vector<std::string> keys;
  for (const auto& f : files) {
    std::ifstream in(f);
    if (!in) {
      return make_error(errc::invalid_argument, "cannot read " + f);
    }
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') {
        line.pop_back();
      }
      if (line.empty() || line.front() == '#') {
        continue;
      }
      if (line.find("PRIVATE KEY") != std::string::npos) {
        return make_error(errc::invalid_argument,
                          f + " holds a private key; pass the public key (.pub) instead");
      }
      keys.push_back(line);
    }
  }
  return keys;
}

result<create_options> create_options_from(const options& o) {
  create_options c;
  c.image = o.image;
  for (const auto& kv : o.env) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      return make_error(errc::invalid_argument, "--env wants KEY=VALUE, got " + kv.substr(0, eq));
    }
    c.env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  if (!o.expires_in.empty()) {
    c.expires_in = parse_duration(o.expires_in);
    if (!c.expires_in) {
      return make_error(errc::invalid_argument,
                        "--expires-in wants a duration like 90m, 2h, 1h30m or 7d");
    }
  }
  c.no_expiry = o.no_expiry;
  c.cpus = o.cpus;
  c.memory_mib = o.memory;
  c.disk_gb = o.disk;
  c.instance_type = o.instance_type;
  if (!o.ssh_key_files.empty()) {
    auto keys = read_public_keys(o.ssh_key_files);
    if (!keys) {
      return keys.error();
    }
    c.ssh_authorized_keys = std::move(*keys);
  }
  c.idempotency_key = o.idempotency_key;
  c.async = o.async;
  return c;
}

int cmd_create(const options& o) {
  auto c = make_client();
  if (!c) {
    return fail(c.error());
  }
  auto opts = create_options_from(o);
  if (!opts) {
    return fail(opts.error());
  }
  // Without --ssh-key the key pair is minted here and only its public half is sent. The
  // private half is on disk (pending, under the Idempotency-Key) before the request leaves,
  // so an answer lost on the way back never loses it, and a retry with the same
  // --idempotency-key sends the same public key and gets the same host.
  std::optional<key_store> store;
  if (!opts->ssh_authorized_keys) {
    auto s = key_store::for_user(process_env());
    if (!s) {
      return fail(s.error());
    }
    store = std::move(*s);
    if (!opts->idempotency_key) {
      opts->idempotency_key = new_uuid_v7(system_clock{}.now());
    }
    auto pair = [&]() -> result<key_pair> {
      if (const auto kept = store->find_pending(*opts->idempotency_key)) {
        return load_key_pair(*kept, "litterbox");
      }
      auto minted = mint_key_pair("litterbox");
      if (!minted) {
        return minted.error();
      }
      if (auto saved = store->save_pending(*opts->idempotency_key, minted->private_openssh);
          !saved) {
        return saved.error();
      }
      return minted;
    }();
    if (!pair) {
      return fail(pair.error());
    }
    opts->ssh_authorized_keys = std::vector<std::string>{pair->public_line};
  }
  // With progress, create asynchronously and draw the states as the host goes through them.
  const bool progress =
      !o.async && (o.progress == "always" || (o.progress == "auto" && isatty(STDERR_FILENO) != 0));
  std::optional<std::int64_t> events_from;
  if (progress) {
    opts->async = true;
    // Where the event stream stands before the create: following the host from there misses
    // none of its changes. A server without the stream (or any failure) means polling.
    if (auto newest = c->newest_event_id()) {
      events_from = *newest;
    }
  }
  auto created = c->create_host(*opts);
  if (!created) {
    const int code = fail(created.error());
    if (store) {
      const auto& e = created.error().code;
      if (e == errc::unavailable || e == errc::timeout) {
        // The service may have created the host: keep the key for a retry.
        std::cerr << "litterbox: the host may exist; its private key is kept in "
                  << store->find_pending(*opts->idempotency_key).value_or("?").string()
                  << "; run the same create with --idempotency-key " << *opts->idempotency_key
                  << " to get it\n";
      } else {
        store->remove_pending(*opts->idempotency_key);
      }
    }
    return code;
  }
  schema::host h = created->host;
  std::optional<std::string> key_file;
  if (store) {
    auto adopted = store->adopt_pending(*opts->idempotency_key, h.id);
    if (!adopted) {
      return fail(adopted.error());
    }
    key_file = adopted->string();
  }
  if (progress && h.status != schema::host_status::active) {
    std::cerr << "creating " << h.id << " (" << h.name << ")\n";
    auto done =
        c->follow_create(h, events_from, c->config().create_timeout,
                         [](schema::host_status seen) { std::cerr << render_progress(seen); });
    if (!done) {
      if (exit_code_for(done.error()) == exit_code::provisioning_failed) {
        std::cerr << "litterbox: host " << h.id << " failed; see `litterbox get " << h.id
                  << "` and `litterbox console " << h.id << "`\n";
      }
      return fail(done.error());
    }
    h = std::move(*done);
  }
  std::cout << (o.json ? render_host_json(h, key_file) : render_host(h, key_file));
  return exit_code::ok;
}

int cmd_ls(const options& o) {
  auto c = make_client();
  if (!c) {
    return fail(c.error());
  }
  list_options lo;
  for (const auto& s : o.statuses) {
    const auto st = schema::parse_host_status(s);
    if (!st) {
      return fail(make_error(errc::invalid_argument, "unknown status " + s));
    }
    lo.statuses.push_back(*st);
  }
  lo.limit = o.limit;
  auto hosts = c->list_hosts(lo);
  if (!hosts) {
    return fail(hosts.error());
  }
  if (o.quiet) {
    for (const auto& h : *hosts) {
      std::cout << h.id << "\n";
    }
  } else {
    std::cout << (o.json ? render_hosts_json(*hosts) : render_host_table(*hosts));
  }
  return exit_code::ok;
}

std::optional<std::string> stored_key(const std::string& id) {
  if (auto store = key_store::for_user(process_env())) {
    if (auto p = store->find(id)) {
      return p->string();
    }
  }
  return std::nullopt;
}

int cmd_get(const options& o) {
  auto c = make_client();
  if (!c) {
    return fail(c.error());
  }
  auto h = c->get_host(o.id);
  if (!h) {
    return fail(h.error());
  }
  const auto key = stored_key(h->id);
  std::cout << (o.json ? render_host_json(*h, key) : render_host(*h, key));
  return exit_code::ok;
}

int cmd_renew(const options& o) {
  auto c = make_client();
  if (!c) {
    return fail(c.error());
  }
  renew_options ro;
  if (!o.expires_in.empty()) {
    ro.expires_in = parse_duration(o.expires_in);
    if (!ro.expires_in) {
      return fail(make_error(errc::invalid_argument,
                             "--expires-in wants a duration like 90m, 2h, 1h30m or 7d"));
    }
  }
  auto h = c->renew_host(o.id, ro);
  if (!h) {
    return fail(h.error());
  }
  std::cout << (o.json ? render_host_json(*h) : render_host(*h));
  return exit_code::ok;
}

int cmd_rm(const options& o) {
  auto c = make_client();
  if (!c) {
    return fail(c.error());
  }
  auto store = key_store::for_user(process_env());
  int code = exit_code::ok;
  for (const auto& id : o.ids) {
    auto r = c->delete_host(id);
    if (!r) {
      const int this_code = fail(r.error());
      if (code == exit_code::ok) {
        code = this_code;
      }
      continue;
    }
    if (store) {
      store->remove(id);
    }
    std::cout << id << "\n";
  }
  return code;
}

int cmd_console(const options& o) {
  auto c = make_client();
  if (!c) {
    return fail(c.error());
  }
  auto text = c->console(o.id, o.bytes);
  if (!text) {
    return fail(text.error());
  }
  std::cout << *text;
  std::cout.flush();
  return exit_code::ok;
}

int cmd_events(const options& o) {
  auto c = make_client();
  if (!c) {
    return fail(c.error());
  }
  std::size_t seen = 0;
  auto done = c->follow_events(o.host, o.after, [&](const host_event& e) {
    if (o.json) {
      std::cout << e.json << '\n';
    } else {
      std::cout << e.at << "  " << e.host_id << "  " << e.type << "  " << e.status;
      if (!e.last_error.empty()) {
        std::cout << "  " << e.last_error;
      }
      std::cout << '\n';
    }
    std::cout.flush();  // one line per event as it happens, also into a pipe
    return !o.max_events || ++seen < *o.max_events;
  });
  if (!done) {
    return fail(done.error());
  }
  return exit_code::ok;
}

int cmd_keys_create(const options& o) {
  auto c = make_client();
  if (!c) {
    return fail(c.error());
  }
  key_request req;
  req.namespace_name = o.key_namespace;
  req.name = o.key_name;
  req.quota = key_quota{o.max_hosts, o.max_cpus, o.max_memory_mib};
  auto k = c->create_key(req);
  if (!k) {
    return fail(k.error());
  }
  if (o.json) {
    std::cout << nlohmann::ordered_json::parse(k->json).dump(2) << "\n";
  } else {
    std::cout << render_created_key(*k);
    std::cerr << "litterbox: store the key now; it is shown only this once (revoke it with "
                 "`litterbox keys rm "
              << k->info.id << "`)\n";
  }
  return exit_code::ok;
}

int cmd_keys_ls(const options& o) {
  auto c = make_client();
  if (!c) {
    return fail(c.error());
  }
  auto keys = c->list_keys();
  if (!keys) {
    return fail(keys.error());
  }
  std::cout << (o.json ? render_keys_json(*keys) : render_key_table(*keys));
  return exit_code::ok;
}

int cmd_keys_rm(const options& o) {
  auto c = make_client();
  if (!c) {
    return fail(c.error());
  }
  int code = exit_code::ok;
  for (const auto& id : o.key_ids) {
    if (auto r = c->delete_key(id); !r) {
      const int this_code = fail(r.error());
      code = code == exit_code::ok ? this_code : code;
      continue;
    }
    std::cout << id << "\n";
  }
  return code;
}

int cmd_audit(const options& o) {
  auto c = make_client();
  if (!c) {
    return fail(c.error());
  }
  audit_options ao;
  ao.namespace_name = o.audit_namespace;
  ao.after = o.audit_after;
  ao.limit = o.limit;
  auto records = c->list_audit(ao);
  if (!records) {
    return fail(records.error());
  }
  std::cout << (o.json ? render_audit_json(*records) : render_audit_table(*records));
  return exit_code::ok;
}

int cmd_doctor() {
  auto c = make_client();
  if (!c) {
    return fail(c.error());
  }
  auto report = c->doctor();
  if (!report) {
    return fail(report.error());
  }
  std::cout << render_doctor(*report);
  return report->ok ? exit_code::ok : exit_code::api;
}

/// `--header-env NAME=VAR` entries as (header, value of $VAR): values are read from the
/// environment so that the credential never sits in argv (visible in ps) or shell history.
result<std::vector<std::pair<std::string, std::string>>> headers_from_env(
    const std::vector<std::string>& entries) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& entry : entries) {
    const auto eq = entry.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == entry.size()) {
      return make_error(errc::invalid_argument,
                        "--header-env wants HEADER=ENVVAR, e.g. Authorization=OPENAI_AUTH");
    }
    const auto var = entry.substr(eq + 1);
    const char* value = std::getenv(var.c_str());
    if (value == nullptr) {
      return make_error(errc::invalid_argument, "environment variable " + var + " is not set");
    }
    out.emplace_back(entry.substr(0, eq), value);
  }
  return out;
}

int cmd_proxy_create(const options& o) {
  auto headers = headers_from_env(o.header_envs);
  if (!headers) {
    return fail(headers.error());
  }
  auto c = make_client();
  if (!c) {
    return fail(c.error());
  }
  if (auto r = c->create_http_proxy(o.proxy_name, o.target, *headers); !r) {
    return fail(r.error());
  }
  std::cout << o.proxy_name << "\n";
  return exit_code::ok;
}

int cmd_proxy_rm(const options& o) {
  auto c = make_client();
  if (!c) {
    return fail(c.error());
  }
  int code = exit_code::ok;
  for (const auto& name : o.proxy_names) {
    if (auto r = c->delete_http_proxy(name); !r) {
      const int this_code = fail(r.error());
      code = code == exit_code::ok ? this_code : code;
      continue;
    }
    std::cout << name << "\n";
  }
  return code;
}

int cmd_proxy_attach(const options& o, bool attach) {
  auto c = make_client();
  if (!c) {
    return fail(c.error());
  }
  auto r =
      attach ? c->attach_http_proxy(o.proxy_name, o.id) : c->detach_http_proxy(o.proxy_name, o.id);
  if (!r) {
    return fail(r.error());
  }
  std::cout << o.proxy_name << " " << (attach ? "attached to " : "detached from ") << o.id << "\n";
  return exit_code::ok;
}

int cmd_proxy_ls(const options& o) {
  auto c = make_client();
  if (!c) {
    return fail(c.error());
  }
  auto proxies = c->list_http_proxies();
  if (!proxies) {
    return fail(proxies.error());
  }
  if (o.json) {
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (const auto& p : *proxies) {
      out.push_back({{"name", p.name},
                     {"target", p.target},
                     {"host_ids", p.host_ids},
                     {"created_at", p.created_at}});
    }
    std::cout << out.dump(2) << "\n";
    return exit_code::ok;
  }
  std::cout << "NAME\tTARGET\tHOSTS\tCREATED\n";
  for (const auto& p : *proxies) {
    std::string hosts;
    for (const auto& id : p.host_ids) {
      hosts += (hosts.empty() ? "" : ",") + id;
    }
    std::cout << p.name << "\t" << p.target << "\t" << (hosts.empty() ? "-" : hosts) << "\t"
              << p.created_at << "\n";
  }
  return exit_code::ok;
}

/// The host to log in to; it must be active (only then is known_hosts set).
result<schema::host> active_host(client& c, const std::string& id) {
  auto h = c.get_host(id);
  if (!h) {
    return h.error();
  }
  if (h->status != schema::host_status::active) {
    return make_error(
        errc::conflict,
        "host " + h->id + " is " + std::string(schema::to_string(h->status)) + ", not active");
  }
  return h;
}

int cmd_ssh(const options& o) {
  auto c = make_client();
  if (!c) {
    return fail(c.error());
  }
  auto h = active_host(*c, o.id);
  if (!h) {
    return fail(h.error());
  }
  if (h->known_hosts.empty()) {
    return fail(make_error(errc::host_key_mismatch, "the host has no pinned host key"));
  }
  const char* tmpdir = std::getenv("TMPDIR");  // NOLINT(concurrency-mt-unsafe)
  std::string tmpl = std::string(tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp") +
                     "/litterbox-known_hosts-XXXXXX";
  const int fd = ::mkstemp(tmpl.data());  // created 0600
  if (fd < 0) {
    return fail(make_error(errc::invalid_argument, "cannot create a temporary known_hosts file"));
  }
  std::string text = h->known_hosts;
  if (text.back() != '\n') {
    text.push_back('\n');
  }
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  if (!written) {
    ::unlink(tmpl.c_str());
    return fail(make_error(errc::invalid_argument, "cannot write the temporary known_hosts file"));
  }
  std::optional<std::filesystem::path> identity;
  if (auto key = stored_key(h->id)) {
    identity = *key;
  }
  const auto args = openssh_argv(*h, tmpl, identity, o.command);
  std::vector<char*> argv;
  for (const auto& a : args) {
    argv.push_back(const_cast<char*>(a.c_str()));  // execvp's signature predates const
  }
  argv.push_back(nullptr);
  // The child owns the terminal; Ctrl-C is for it, not for us (we still clean up after it).
  std::signal(SIGINT, SIG_IGN);
  std::signal(SIGQUIT, SIG_IGN);
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGQUIT, SIG_DFL);
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "litterbox: cannot run ssh: %s\n", std::strerror(errno));
    ::_exit(exit_code::ssh);
  }
  int status = 0;
  if (pid > 0) {
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  ::unlink(tmpl.c_str());
  if (pid < 0) {
    return fail(make_error(errc::ssh, "cannot start ssh"));
  }
  if (WIFEXITED(status)) {
    return WEXITSTATUS(status);
  }
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : exit_code::ssh;
}

result<ssh_target> target_for(client& c, const std::string& id) {
  auto h = active_host(c, id);
  if (!h) {
    return h.error();
  }
  ssh_target t{std::move(*h), std::nullopt};
  if (auto key = stored_key(t.host.id)) {
    t.identity = *key;
  }
  return t;
}

int cmd_exec(const options& o) {
  auto c = make_client();
  if (!c) {
    return fail(c.error());
  }
  auto t = target_for(*c, o.id);
  if (!t) {
    return fail(t.error());
  }
  std::cout.flush();
  auto code = ssh_exec(*t, o.command);
  if (!code) {
    return fail(code.error());
  }
  return *code;
}

int cmd_cp(const options& o) {
  const auto src = parse_cp_operand(o.src);
  const auto dst = parse_cp_operand(o.dst);
  if (src.host_id.has_value() == dst.host_id.has_value()) {
    return fail(make_error(errc::invalid_argument,
                           "cp wants exactly one side as ID:path (the other a local path)"));
  }
  auto c = make_client();
  if (!c) {
    return fail(c.error());
  }
  auto t = target_for(*c, src.host_id ? *src.host_id : *dst.host_id);
  if (!t) {
    return fail(t.error());
  }
  auto r =
      src.host_id ? sftp_download(*t, src.path, dst.path) : sftp_upload(*t, src.path, dst.path);
  if (!r) {
    return fail(r.error());
  }
  return exit_code::ok;
}

void add_json(CLI::App* cmd, options& o) {
  cmd->add_flag("--json", o.json, "Print JSON for scripts instead of text");
}

}  // namespace

std::string bash_completion(const CLI::App& app) {
  std::string commands;
  std::string cases;
  for (const auto* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    commands += (commands.empty() ? "" : " ") + sub->get_name();
    std::string flags = "--help";
    for (const auto* opt : sub->get_options()) {
      for (const auto& l : opt->get_lnames()) {
        if (l != "help") {
          flags += " --" + l;
        }
      }
    }
    cases += "    " + sub->get_name() + ") opts=\"" + flags + "\" ;;\n";
  }
  return "# bash completion for litterbox; load with: source <(litterbox completion bash)\n"
         "_litterbox() {\n"
         "  local cur=\"${COMP_WORDS[COMP_CWORD]}\" cmd=\"${COMP_WORDS[1]}\" opts=\"\"\n"
         "  if [ \"$COMP_CWORD\" -eq 1 ]; then\n"
         "    COMPREPLY=($(compgen -W \"" +
         commands +
         " --help\" -- \"$cur\"))\n"
         "    return\n"
         "  fi\n"
         "  case \"$cmd\" in\n" +
         cases +
         "  esac\n"
         "  if [[ \"$cur\" == -* ]]; then\n"
         "    COMPREPLY=($(compgen -W \"$opts\" -- \"$cur\"))\n"
         "    return\n"
         "  fi\n"
         "  case \"$cmd\" in\n"
         "    get|renew|rm|console|ssh|exec)\n"
         "      COMPREPLY=($(compgen -W \"$(litterbox ls --quiet 2>/dev/null)\" -- \"$cur\")) ;;\n"
         "    cp) COMPREPLY=($(compgen -f -- \"$cur\")) ;;\n"
         "    completion) COMPREPLY=($(compgen -W \"bash\" -- \"$cur\")) ;;\n"
         "  esac\n"
         "}\n"
         "complete -F _litterbox litterbox\n";
}

int run(int argc, char** argv) {
  CLI::App app{"litterbox: disposable Linux VMs over SSH", "litterbox"};
  app.footer(k_exit_codes);
  app.require_subcommand(1);
  options o;

  auto* create = app.add_subcommand("create", "Create a host and wait until it is active");
  create->add_option("--image", o.image, "OCI image reference (default: the server's)");
  create->add_option("--env", o.env, "Environment variable for the guest, KEY=VALUE (repeatable)");
  auto* expires = create->add_option("--expires-in", o.expires_in,
                                     "Lease length from now: 90m, 2h, 1h30m, 7d (default: the "
                                     "server's lease, counted from activation)");
  create->add_flag("--no-expiry", o.no_expiry, "The host never expires")->excludes(expires);
  create->add_option("--cpus", o.cpus, "vCPUs")->check(CLI::PositiveNumber);
  create->add_option("--memory", o.memory, "Memory in MiB")->check(CLI::PositiveNumber);
  create->add_option("--disk", o.disk, "Root disk in GB")->check(CLI::PositiveNumber);
  create->add_option("--instance-type", o.instance_type, "A named size the server offers");
  create->add_option("--ssh-key", o.ssh_key_files,
                     "Public key file to authorize (repeatable); without it the CLI mints a "
                     "key pair, keeps the private half and sends the public one");
  create->add_option("--idempotency-key", o.idempotency_key,
                     "Idempotency-Key (default: a fresh one; reuse it to retry safely)");
  create->add_flag("--async", o.async, "Return at once with the host still provisioning");
  create
      ->add_option("--progress", o.progress,
                   "Draw each status on stderr as it happens (from the event stream, else by "
                   "polling): auto (when stderr is a terminal), always, never")
      ->check(CLI::IsMember({"auto", "always", "never"}));
  add_json(create, o);

  auto* ls = app.add_subcommand("ls", "List hosts, newest first");
  ls->add_option("--status", o.statuses, "Only hosts in this status (repeatable)");
  ls->add_option("--limit", o.limit, "At most this many hosts")->check(CLI::PositiveNumber);
  ls->add_flag("-q,--quiet", o.quiet, "Print only ids");
  add_json(ls, o);

  auto* get = app.add_subcommand("get", "Show one host");
  get->add_option("id", o.id, "Host id")->required();
  add_json(get, o);

  auto* renew = app.add_subcommand("renew", "Extend a host's lease");
  renew->add_option("id", o.id, "Host id")->required();
  renew->add_option("--expires-in", o.expires_in,
                    "New lease length from now (default: the server's lease)");
  add_json(renew, o);

  auto* rm = app.add_subcommand("rm", "Delete hosts (and the private keys kept for them)");
  rm->add_option("ids", o.ids, "Host ids")->required();

  auto* console = app.add_subcommand("console", "Print the tail of a host's serial console");
  console->add_option("id", o.id, "Host id")->required();
  console->add_option("--bytes", o.bytes, "How many bytes of the tail");

  auto* events = app.add_subcommand(
      "events", "Print host state changes as they happen (GET /events), until interrupted");
  events->add_option("--host", o.host, "Only this host's events");
  events->add_option("--after", o.after, "Start after this event id (default: from now)");
  events->add_option("--max", o.max_events, "Exit after this many events")
      ->check(CLI::PositiveNumber);
  events->add_flag("--json", o.json, "One JSON object a line");
  auto* doctor = app.add_subcommand("doctor", "Ask the service to check itself");

  auto* ssh = app.add_subcommand(
      "ssh", "Log in with OpenSSH, trusting only the host's pinned key (exits with ssh's code)");
  ssh->add_option("id", o.id, "Host id")->required();
  ssh->add_option("command", o.command, "Remote command (after --)");

  auto* exec = app.add_subcommand(
      "exec", "Run a command over SSH with the pinned host key; exits with its exit code");
  exec->add_option("id", o.id, "Host id")->required();
  exec->add_option("command", o.command,
                   "Command and arguments after -- (each argument stays one word; use "
                   "sh -c '…' for shell syntax)")
      ->required();

  auto* cp = app.add_subcommand("cp", "Copy a file to or from a host over SFTP (ID:path)");
  cp->add_option("src", o.src, "Source: local path or ID:path")->required();
  cp->add_option("dst", o.dst, "Destination: local path or ID:path")->required();

  auto* proxy =
      app.add_subcommand("proxy", "HTTP proxies: forwarders that add credentials guests never see");
  proxy->require_subcommand(1);
  auto* proxy_create = proxy->add_subcommand("create", "Create an HTTP proxy");
  proxy_create->add_option("name", o.proxy_name, "Proxy name (a-z, 0-9, -)")->required();
  proxy_create->add_option("target", o.target, "Origin to forward to: https://host[:port]")
      ->required();
  proxy_create
      ->add_option("--header-env", o.header_envs,
                   "HEADER=ENVVAR: add HEADER with the value of $ENVVAR (repeatable; values "
                   "never go on the command line)")
      ->required();
  auto* proxy_rm = proxy->add_subcommand("rm", "Delete HTTP proxies (detaching them everywhere)");
  proxy_rm->add_option("names", o.proxy_names, "Proxy names")->required();
  auto* proxy_attach = proxy->add_subcommand("attach", "Let a host's guest use a proxy");
  proxy_attach->add_option("name", o.proxy_name, "Proxy name")->required();
  proxy_attach->add_option("id", o.id, "Host id")->required();
  auto* proxy_detach = proxy->add_subcommand("detach", "Take a proxy away from a host");
  proxy_detach->add_option("name", o.proxy_name, "Proxy name")->required();
  proxy_detach->add_option("id", o.id, "Host id")->required();
  auto* proxy_ls = proxy->add_subcommand("ls", "List HTTP proxies (never their headers)");
  add_json(proxy_ls, o);

  auto* keys = app.add_subcommand(
      "keys", "Scoped keys: one per namespace (customer), with quotas (admin token only)");
  keys->require_subcommand(1);
  auto* keys_create = keys->add_subcommand("create", "Mint a key; its secret is shown only once");
  keys_create->add_option("--namespace", o.key_namespace, "The namespace the key is confined to")
      ->required();
  keys_create->add_option("--name", o.key_name, "A name for people (default: none)");
  keys_create->add_option("--max-hosts", o.max_hosts, "Quota: hosts at once in the namespace")
      ->check(CLI::NonNegativeNumber);
  keys_create->add_option("--max-cpus", o.max_cpus, "Quota: vCPUs at once in the namespace")
      ->check(CLI::NonNegativeNumber);
  keys_create
      ->add_option("--max-memory-mib", o.max_memory_mib,
                   "Quota: guest memory in MiB at once in the namespace")
      ->check(CLI::NonNegativeNumber);
  keys_create->add_flag("--json", o.json, "Print the server's answer (secret included) as JSON");
  auto* keys_ls = keys->add_subcommand("ls", "List keys (never their secrets)");
  add_json(keys_ls, o);
  auto* keys_rm = keys->add_subcommand("rm", "Revoke keys (refused everywhere within a second)");
  keys_rm->add_option("ids", o.key_ids, "Key ids")->required();

  auto* audit = app.add_subcommand(
      "audit", "Print the audit log: every state-changing call, oldest first (admin token only)");
  audit->add_option("--namespace", o.audit_namespace, "Only this namespace's calls");
  audit->add_option("--after", o.audit_after, "Start after this record id");
  audit->add_option("--limit", o.limit, "At most this many records (default: all)")
      ->check(CLI::PositiveNumber);
  add_json(audit, o);

  auto* completion = app.add_subcommand("completion", "Print a shell completion script");
  completion->add_option("shell", o.shell, "Shell (bash)")
      ->required()
      ->check(CLI::IsMember({"bash"}));

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "litterbox: " << e.what() << "\n"
              << "Run with --help for more information.\n";
    return exit_code::usage;
  }

  if (create->parsed())
    return cmd_create(o);
  if (ls->parsed())
    return cmd_ls(o);
  if (get->parsed())
    return cmd_get(o);
  if (renew->parsed())
    return cmd_renew(o);
  if (rm->parsed())
    return cmd_rm(o);
  if (console->parsed())
    return cmd_console(o);
  if (events->parsed())
    return cmd_events(o);
  if (doctor->parsed())
    return cmd_doctor();
  if (ssh->parsed())
    return cmd_ssh(o);
  if (exec->parsed())
    return cmd_exec(o);
  if (cp->parsed())
    return cmd_cp(o);
  if (proxy_create->parsed())
    return cmd_proxy_create(o);
  if (proxy_rm->parsed())
    return cmd_proxy_rm(o);
  if (proxy_attach->parsed())
    return cmd_proxy_attach(o, true);
  if (proxy_detach->parsed())
    return cmd_proxy_attach(o, false);
  if (proxy_ls->parsed())
    return cmd_proxy_ls(o);
  if (keys_create->parsed())
    return cmd_keys_create(o);
  if (keys_ls->parsed())
    return cmd_keys_ls(o);
  if (keys_rm->parsed())
    return cmd_keys_rm(o);
  if (audit->parsed())
    return cmd_audit(o);
  if (completion->parsed()) {
    std::cout << bash_completion(app);
    return exit_code::ok;
  }
  return exit_code::usage;
}

}  // namespace litterbox::client::cli
