#include "base/clock.hpp"
#include "base/log.hpp"
#include "base/secret.hpp"
#include "base/uuid.hpp"
#include "controlplane/core/config.hpp"
#include "controlplane/core/errc.hpp"
#include "controlplane/core/host_service.hpp"
#include "controlplane/core/key_service.hpp"
#include "controlplane/core/maintenance.hpp"
#include "controlplane/core/observer.hpp"
#include "controlplane/core/proxy_service.hpp"
#include "controlplane/core/proxy_target.hpp"
#include "controlplane/core/reaper.hpp"
#include "controlplane/core/reconciler.hpp"
#include "controlplane/http/guest_gateway.hpp"
#include "controlplane/http/prometheus_metrics.hpp"
#include "controlplane/http/server.hpp"
#include "controlplane/litterboxd/config_file.hpp"
#include "controlplane/litterboxd/node_command.hpp"
#include "controlplane/pg/connection_pool.hpp"
#include "controlplane/pg/event_listener.hpp"
#include "controlplane/pg/migrate.hpp"
#include "controlplane/pg/pg_store.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/fake/fake_driver.hpp"
#include "hypervisor/fleet_driver.hpp"
#include "hypervisor/image/image_store.hpp"
#include "hypervisor/image/image_store_bases.hpp"
#include "hypervisor/libvirt/libvirt_driver.hpp"

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/prctl.h>
#include <system_error>
#include <thread>
#include <unistd.h>
#include <vector>

namespace litterbox::litterboxd {
namespace {

using controlplane::config;

/// Start-up and configuration failures: main logs the message (one line) and exits 1.
class startup_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

void resolve_guest_kernel(config& c);

/// Flag values as the command line and environment give them, before they become a config.
struct options {
  config cfg;
  std::string service_tokens;
  std::string ssh_ports = "22000-22999";
  std::string instance_types;
  std::string state_dir;
  std::string log_format = "text";
  std::int64_t lease_default_ttl = 86400;
  std::int64_t idempotency_key_ttl_hours = 24;
  std::int64_t provision_timeout = 600;
  std::int64_t reap_interval = 30;
  std::int64_t error_retention = 600;
  std::int64_t event_retention = 86400;
  std::int64_t reconcile_interval = 10;
  std::int64_t heartbeat_interval = 10;
  std::int64_t provision_grace = 60;
  std::int64_t shutdown_drain = 30;
  std::int64_t http_idle_timeout = 30;
  std::int64_t db_statement_timeout = 30;
  std::int64_t db_lock_timeout = 5;
  std::int64_t db_idle_tx_timeout = 60;
  std::int64_t db_tcp_timeout = 15;
  std::string port_file;
  std::int64_t fake_pull_delay_ms = 0;
  std::int64_t fake_create_delay_ms = 0;
  std::int64_t fake_boot_delay_ms = 0;
  std::int64_t fake_destroy_delay_ms = 0;
  std::int64_t fake_template_delay_ms = 0;
  std::int64_t fake_restore_delay_ms = 0;
  std::int64_t fake_login_delay_ms = 0;
  std::string fake_state_dir;
  std::string insecure_registries = "127.0.0.1:5000";
  std::string registry_auth_file;
  std::int64_t image_cache_gb = 20;
  std::int64_t image_max_gb = 8;
  std::int64_t image_max_entries = 1'000'000;
  std::int64_t overlay_max_gb = 0;
  bool guest_internet = true;
  std::string guest_egress;
  std::vector<hypervisor::egress_entry> guest_egress_entries;  ///< parsed by finish_config
  std::string owner = "litterbox";
  std::string templates = "on";
  std::string clone_clock = "date";
  std::int64_t template_ttl = 7 * 86400;
  std::int64_t template_retry = 600;
  std::string pool;
  std::int64_t pool_max_age = 3600;
  std::int64_t guest_proxy_connect_timeout = 10;
  std::int64_t guest_proxy_idle_timeout = 60;
};

std::vector<std::string> split(std::string_view text, char sep) {
  std::vector<std::string> out;
  while (true) {
    const auto pos = text.find(sep);
    out.emplace_back(text.substr(0, pos));
    if (pos == std::string_view::npos) {
      return out;
    }
    text.remove_prefix(pos + 1);
  }
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return std::string(s);
}

std::optional<int> to_int(std::string_view text) {
  int v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc{} || end != text.data() + text.size()) {
    return std::nullopt;
  }
  return v;
}

/// "small=1:1024,medium=2:2048:20" → specs; empty text keeps the defaults.
std::vector<controlplane::instance_type_spec> parse_instance_types(const std::string& text) {
  if (trim(text).empty()) {
    return controlplane::default_instance_types();
  }
  std::vector<controlplane::instance_type_spec> out;
  for (const auto& item : split(text, ',')) {
    const auto entry = trim(item);
    if (entry.empty()) {
      continue;
    }
    const auto eq = entry.find('=');
    const auto bad = [&entry] {
      return startup_error("LITTERBOX_INSTANCE_TYPES: \"" + entry +
                           "\" is not name=cpus:memory_mib[:disk_gb]");
    };
    if (eq == std::string::npos || eq == 0) {
      throw bad();
    }
    const auto parts = split(std::string_view(entry).substr(eq + 1), ':');
    if (parts.size() < 2 || parts.size() > 3) {
      throw bad();
    }
    controlplane::instance_type_spec spec;
    spec.name = entry.substr(0, eq);
    const auto cpus = to_int(parts[0]);
    const auto memory = to_int(parts[1]);
    if (!cpus || !memory || *cpus <= 0 || *memory <= 0) {
      throw bad();
    }
    spec.cpus = *cpus;
    spec.memory_mib = *memory;
    if (parts.size() == 3) {
      const auto disk = to_int(parts[2]);
      if (!disk || *disk <= 0) {
        throw bad();
      }
      spec.disk_gb = *disk;
    }
    out.push_back(std::move(spec));
  }
  return out;
}

/// "22000-22999" → {min, max}.
std::pair<int, int> parse_port_range(const std::string& text) {
  const auto dash = text.find('-');
  const auto lo = to_int(trim(std::string_view(text).substr(0, dash)));
  const auto hi = dash == std::string::npos ? std::nullopt
                                            : to_int(trim(std::string_view(text).substr(dash + 1)));
  if (!lo || !hi || *lo < 1 || *hi > 65535 || *lo > *hi) {
    throw startup_error("LITTERBOX_SSH_PORTS must be min-max within 1-65535, got \"" + text + "\"");
  }
  return {*lo, *hi};
}

/// Every config field, as a flag that also reads its environment variable (the flag wins).
void add_config_options(CLI::App& cmd, options& o) {
  auto& c = o.cfg;
  cmd.add_option("--database-url", c.database_url, "PostgreSQL connection URL")
      ->envname("DATABASE_URL");
  cmd.add_option("--service-tokens", o.service_tokens, "Comma-separated bearer tokens")
      ->envname("SERVICE_TOKENS");
  cmd.add_option("--listen", c.listen, "host:port to serve on (port 0: any free port)")
      ->envname("LITTERBOX_LISTEN")
      ->capture_default_str();
  cmd.add_option("--hypervisor", c.hypervisor, "Hypervisor backend: libvirt | fake")
      ->envname("LITTERBOX_HYPERVISOR")
      ->check(CLI::IsMember({"libvirt", "fake"}))
      ->capture_default_str();
  cmd.add_option("--libvirt-uri", c.libvirt_uri, "libvirt connection URI")
      ->envname("LIBVIRT_URI")
      ->capture_default_str();
  cmd.add_option("--accel", c.accel, "Guest acceleration: auto | kvm | tcg")
      ->envname("LITTERBOX_ACCEL")
      ->check(CLI::IsMember({"auto", "kvm", "tcg"}))
      ->capture_default_str();
  cmd.add_option("--state-dir", o.state_dir, "Image cache, disks, seeds, console logs")
      ->envname("LITTERBOX_STATE_DIR");
  cmd.add_option("--ssh-host", c.ssh_host, "Address returned as ssh_host")
      ->envname("LITTERBOX_SSH_HOST")
      ->capture_default_str();
  cmd.add_option("--ssh-ports", o.ssh_ports, "Port range for SSH forwards (min-max)")
      ->envname("LITTERBOX_SSH_PORTS")
      ->capture_default_str();
  cmd.add_option("--default-image", c.default_image, "Image used when a create names none")
      ->envname("LITTERBOX_DEFAULT_IMAGE")
      ->capture_default_str();
  cmd.add_option("--kernel", c.kernel, "Guest kernel (default: the newest /boot/vmlinuz-*)")
      ->envname("LITTERBOX_KERNEL");
  cmd.add_option("--initrd", c.initrd, "Guest initrd (default: the kernel's /boot/initrd.img-*)")
      ->envname("LITTERBOX_INITRD");
  cmd.add_option("--insecure-registries", o.insecure_registries,
                 "Comma-separated host:port registries reached over plain HTTP")
      ->envname("LITTERBOX_INSECURE_REGISTRIES")
      ->capture_default_str();
  cmd.add_option("--registry-auth-file", o.registry_auth_file,
                 "containers-auth.json with registry credentials")
      ->envname("LITTERBOX_REGISTRY_AUTH_FILE");
  cmd.add_option("--image-cache-gb", o.image_cache_gb,
                 "Unused base images are collected above this size")
      ->envname("LITTERBOX_IMAGE_CACHE_GB")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--image-max-gb", o.image_max_gb,
                 "An image whose layers unpack to more file contents than this is refused")
      ->envname("LITTERBOX_IMAGE_MAX_GB")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--image-max-entries", o.image_max_entries,
                 "An image whose layers unpack to more files and directories is refused")
      ->envname("LITTERBOX_IMAGE_MAX_ENTRIES")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--overlay-max-gb", o.overlay_max_gb,
                 "Cap on the disks of all guests together (their virtual sizes); 0 = the state "
                 "filesystem's size less a 1 GiB reserve")
      ->envname("LITTERBOX_OVERLAY_MAX_GB")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd.add_option("--owner", o.owner,
                 "Owner tag in domain metadata; orphan sweeps only touch domains carrying it")
      ->envname("LITTERBOX_OWNER")
      ->capture_default_str();
  cmd.add_option("--guest-internet", o.guest_internet,
                 "Let guests open outbound connections (never to this host's services)")
      ->envname("LITTERBOX_GUEST_INTERNET")
      ->capture_default_str();
  cmd.add_option("--guest-egress", o.guest_egress,
                 "allow=CIDR,deny=CIDR,… checked in order (first match wins) before the default "
                 "deny of private, link-local, loopback and other non-public ranges")
      ->envname("LITTERBOX_GUEST_EGRESS");
  cmd.add_option("--lease-default-ttl", o.lease_default_ttl, "Default lease in seconds")
      ->envname("LEASE_DEFAULT_TTL")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--idempotency-key-ttl-hours", o.idempotency_key_ttl_hours,
                 "How long Idempotency-Keys are kept")
      ->envname("IDEMPOTENCY_KEY_TTL_HOURS")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--provision-timeout", o.provision_timeout, "Seconds a create may take")
      ->envname("PROVISION_TIMEOUT")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--reap-interval", o.reap_interval, "Seconds between reaper passes")
      ->envname("LITTERBOX_REAP_INTERVAL")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--error-retention", o.error_retention,
                 "Seconds a failed host is kept for callers to read")
      ->envname("LITTERBOX_ERROR_RETENTION")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd.add_option("--reconcile-interval", o.reconcile_interval,
                 "Seconds between checks that every active host's VM runs")
      ->envname("LITTERBOX_RECONCILE_INTERVAL")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--event-retention", o.event_retention,
                 "Seconds host events are kept for streams to resume from")
      ->envname("LITTERBOX_EVENT_RETENTION")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--heartbeat-interval", o.heartbeat_interval, "Seconds between heartbeats")
      ->envname("LITTERBOX_HEARTBEAT_INTERVAL")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--ssh-username", c.ssh_username, "Login user inside guests")
      ->envname("LITTERBOX_SSH_USERNAME")
      ->capture_default_str();
  cmd.add_option("--default-cpus", c.default_cpus)
      ->envname("LITTERBOX_DEFAULT_CPUS")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--default-memory-mib", c.default_memory_mib)
      ->envname("LITTERBOX_DEFAULT_MEMORY_MIB")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--max-cpus", c.max_cpus)
      ->envname("LITTERBOX_MAX_CPUS")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--max-memory-mib", c.max_memory_mib)
      ->envname("LITTERBOX_MAX_MEMORY_MIB")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--max-disk-gb", c.max_disk_gb)
      ->envname("LITTERBOX_MAX_DISK_GB")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--max-env-bytes", c.max_env_bytes)
      ->envname("LITTERBOX_MAX_ENV_BYTES")
      ->capture_default_str();
  cmd.add_option("--max-body-bytes", c.max_body_bytes, "Largest request body accepted")
      ->envname("LITTERBOX_MAX_BODY_BYTES")
      ->capture_default_str();
  cmd.add_option("--list-default-limit", c.list_default_limit, "GET /hosts page size (0: all)")
      ->envname("LITTERBOX_LIST_DEFAULT_LIMIT")
      ->capture_default_str();
  cmd.add_option("--list-max-limit", c.list_max_limit, "Largest GET /hosts limit")
      ->envname("LITTERBOX_LIST_MAX_LIMIT")
      ->capture_default_str();
  cmd.add_option("--instance-types", o.instance_types,
                 "Named sizes: name=cpus:memory_mib[:disk_gb],…")
      ->envname("LITTERBOX_INSTANCE_TYPES");
  cmd.add_option("--reap-concurrency", c.reap_concurrency, "Teardowns a reaper pass runs at once")
      ->envname("LITTERBOX_REAP_CONCURRENCY")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--max-provisioning", c.max_concurrent_provisions,
                 "Creates provisioned at once by this process")
      ->envname("LITTERBOX_MAX_PROVISIONING")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--max-queued", c.max_queued_provisions,
                 "Creates admitted beyond those provisioning; past it a create is 503 CAPACITY")
      ->envname("LITTERBOX_MAX_QUEUED")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd.add_option("--provision-grace", o.provision_grace,
                 "Seconds past a create's deadline after which any process fails it")
      ->envname("LITTERBOX_PROVISION_GRACE")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--shutdown-drain", o.shutdown_drain,
                 "Seconds running creates may go on after SIGTERM before they are failed")
      ->envname("LITTERBOX_SHUTDOWN_DRAIN")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd.add_option("--http-threads", c.http_threads)
      ->envname("LITTERBOX_HTTP_THREADS")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--blocking-threads", c.blocking_threads,
                 "Threads for database-only request work (0: one per core)")
      ->envname("LITTERBOX_BLOCKING_THREADS")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd.add_option("--hypervisor-threads", c.hypervisor_threads,
                 "Threads for request work that reaches the hypervisor (DELETE, console, doctor)")
      ->envname("LITTERBOX_HYPERVISOR_THREADS")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--db-pool", c.db_pool_size, "Database connections")
      ->envname("LITTERBOX_DB_POOL")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--http-idle-timeout", o.http_idle_timeout,
                 "Seconds before an idle or slow connection is closed")
      ->envname("LITTERBOX_HTTP_IDLE_TIMEOUT")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--db-statement-timeout", o.db_statement_timeout,
                 "Seconds a database statement may run (0: no limit)")
      ->envname("LITTERBOX_DB_STATEMENT_TIMEOUT")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd.add_option("--db-lock-timeout", o.db_lock_timeout,
                 "Seconds a database statement may wait for a lock (0: no limit)")
      ->envname("LITTERBOX_DB_LOCK_TIMEOUT")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd.add_option("--db-idle-tx-timeout", o.db_idle_tx_timeout,
                 "Seconds a session may sit idle inside a transaction (0: no limit)")
      ->envname("LITTERBOX_DB_IDLE_TX_TIMEOUT")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd.add_option(
         "--db-tcp-timeout", o.db_tcp_timeout,
         "Seconds unanswered database traffic may wait (tcp_user_timeout; 0: kernel default)")
      ->envname("LITTERBOX_DB_TCP_TIMEOUT")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd.add_option("--max-connections", c.max_connections,
                 "HTTP connections served at once; more get 503 CAPACITY")
      ->envname("LITTERBOX_MAX_CONNECTIONS")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--log-level", c.log_level, "trace | debug | info | warn | error | critical")
      ->envname("LITTERBOX_LOG_LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
      ->capture_default_str();
  cmd.add_option("--log-format", o.log_format, "text | json")
      ->envname("LITTERBOX_LOG_FORMAT")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  cmd.add_option("--templates", o.templates,
                 "Clone creates from saved templates built in the background: on | off")
      ->envname("LITTERBOX_TEMPLATES")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  cmd.add_option("--clone-clock", o.clone_clock,
                 "How a clone's clock is set: date (system clock, one fixed /bin/date through "
                 "the guest agent) | set-time (guest-set-time, also the RTC: seconds under TCG)")
      ->envname("LITTERBOX_CLONE_CLOCK")
      ->check(CLI::IsMember({"date", "set-time"}))
      ->capture_default_str();
  cmd.add_option("--template-ttl", o.template_ttl,
                 "Seconds a template nothing clones is kept before it is collected")
      ->envname("LITTERBOX_TEMPLATE_TTL")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--template-retry", o.template_retry,
                 "Seconds after a failed template build before it is tried again")
      ->envname("LITTERBOX_TEMPLATE_RETRY")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--pool", o.pool,
                 "Warm pools: count[:instance_type][@image],… (default image and size when "
                 "left out; empty: none)")
      ->envname("LITTERBOX_POOL");
  cmd.add_option("--pool-max-age", o.pool_max_age,
                 "Seconds an unclaimed pool member is kept before it is replaced")
      ->envname("LITTERBOX_POOL_MAX_AGE")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--pool-refill-per-minute", c.pool_refill_per_minute,
                 "Pool members restored per minute at most by this process")
      ->envname("LITTERBOX_POOL_REFILL_PER_MINUTE")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--http-proxy-allow", c.http_proxy_allow,
                 "HTTP proxy targets allowed although loopback, link-local, private or local: "
                 "comma-separated CIDRs or host:port")
      ->envname("LITTERBOX_HTTP_PROXY_ALLOW");
  cmd.add_option("--guest-proxy-max-connections", c.guest_proxy_max_connections,
                 "Connections one guest may have open to its HTTP proxy endpoint at once")
      ->envname("LITTERBOX_GUEST_PROXY_MAX_CONNECTIONS")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--guest-proxy-connect-timeout", o.guest_proxy_connect_timeout,
                 "Seconds to connect (and TLS handshake) to an HTTP proxy target")
      ->envname("LITTERBOX_GUEST_PROXY_CONNECT_TIMEOUT")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--guest-proxy-idle-timeout", o.guest_proxy_idle_timeout,
                 "Seconds a proxied exchange or an idle guest connection may stall")
      ->envname("LITTERBOX_GUEST_PROXY_IDLE_TIMEOUT")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--key-rate-limit", c.key_rate_limit,
                 "Requests per second one scoped key may make of this process (0: no limit)")
      ->envname("LITTERBOX_KEY_RATE_LIMIT")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd.add_option("--key-rate-burst", c.key_rate_burst,
                 "Requests one scoped key may make at once after a quiet spell")
      ->envname("LITTERBOX_KEY_RATE_BURST")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--fake-pull-delay-ms", o.fake_pull_delay_ms)
      ->envname("LITTERBOX_FAKE_PULL_DELAY_MS")
      ->check(CLI::NonNegativeNumber);
  cmd.add_option("--fake-create-delay-ms", o.fake_create_delay_ms)
      ->envname("LITTERBOX_FAKE_CREATE_DELAY_MS")
      ->check(CLI::NonNegativeNumber);
  cmd.add_option("--fake-boot-delay-ms", o.fake_boot_delay_ms)
      ->envname("LITTERBOX_FAKE_BOOT_DELAY_MS")
      ->check(CLI::NonNegativeNumber);
  cmd.add_option("--fake-destroy-delay-ms", o.fake_destroy_delay_ms)
      ->envname("LITTERBOX_FAKE_DESTROY_DELAY_MS")
      ->check(CLI::NonNegativeNumber);
  cmd.add_option("--fake-template-delay-ms", o.fake_template_delay_ms)
      ->envname("LITTERBOX_FAKE_TEMPLATE_DELAY_MS")
      ->check(CLI::NonNegativeNumber);
  cmd.add_option("--fake-restore-delay-ms", o.fake_restore_delay_ms)
      ->envname("LITTERBOX_FAKE_RESTORE_DELAY_MS")
      ->check(CLI::NonNegativeNumber);
  cmd.add_option("--fake-login-delay-ms", o.fake_login_delay_ms)
      ->envname("LITTERBOX_FAKE_LOGIN_DELAY_MS")
      ->check(CLI::NonNegativeNumber);
  cmd.add_option("--fake-state-dir", o.fake_state_dir,
                 "Where the fake hypervisor keeps its VMs (default <state-dir>/fake)")
      ->envname("LITTERBOX_FAKE_STATE_DIR");
}

/// Turns the parsed flags into the final config; throws startup_error on bad values.
void finish_config(options& o, bool needs_tokens) {
  auto& c = o.cfg;
  if (needs_tokens) {
    for (const auto& t : split(o.service_tokens, ',')) {
      auto token = trim(t);
      if (!token.empty()) {
        c.service_tokens.push_back(std::move(token));
      }
    }
    if (c.service_tokens.empty()) {
      throw startup_error("SERVICE_TOKENS is required");
    }
  }
  if (c.database_url.empty()) {
    throw startup_error("DATABASE_URL is required");
  }
  auto egress = hypervisor::parse_egress_policy(o.guest_egress);
  if (!egress) {
    throw startup_error(egress.error().message);
  }
  o.guest_egress_entries = std::move(*egress);
  const auto [lo, hi] = parse_port_range(o.ssh_ports);
  c.ssh_port_min = lo;
  c.ssh_port_max = hi;
  c.instance_types = parse_instance_types(o.instance_types);
  c.state_dir = o.state_dir.empty() ? std::filesystem::path("/var/lib/litterbox")
                                    : std::filesystem::path(o.state_dir);
  if (c.hypervisor == "libvirt") {
    resolve_guest_kernel(c);
  }
  c.lease_default_ttl = std::chrono::seconds(o.lease_default_ttl);
  c.idempotency_key_ttl = std::chrono::hours(o.idempotency_key_ttl_hours);
  c.provision_timeout = std::chrono::seconds(o.provision_timeout);
  c.reap_interval = std::chrono::seconds(o.reap_interval);
  c.error_retention = std::chrono::seconds(o.error_retention);
  c.event_retention = std::chrono::seconds(o.event_retention);
  c.reconcile_interval = std::chrono::seconds(o.reconcile_interval);
  c.heartbeat_interval = std::chrono::seconds(o.heartbeat_interval);
  c.provision_grace = std::chrono::seconds(o.provision_grace);
  c.shutdown_drain = std::chrono::seconds(o.shutdown_drain);
  c.http_idle_timeout = std::chrono::seconds(o.http_idle_timeout);
  c.db_statement_timeout = std::chrono::seconds(o.db_statement_timeout);
  c.db_lock_timeout = std::chrono::seconds(o.db_lock_timeout);
  c.db_idle_in_transaction_timeout = std::chrono::seconds(o.db_idle_tx_timeout);
  c.db_tcp_timeout = std::chrono::seconds(o.db_tcp_timeout);
  c.log_json = o.log_format == "json";
  c.templates = o.templates == "on";
  c.template_ttl = std::chrono::seconds(o.template_ttl);
  c.template_retry = std::chrono::seconds(o.template_retry);
  c.guest_proxy_connect_timeout = std::chrono::seconds(o.guest_proxy_connect_timeout);
  c.guest_proxy_idle_timeout = std::chrono::seconds(o.guest_proxy_idle_timeout);
  c.pool_max_age = std::chrono::seconds(o.pool_max_age);
  auto pools = controlplane::parse_pools(o.pool, c);
  if (!pools) {
    throw startup_error(pools.error().message);
  }
  c.pools = std::move(*pools);
  if (auto allow = controlplane::parse_proxy_allow(c.http_proxy_allow); !allow) {
    throw startup_error(allow.error().message);
  }
  if (!c.pools.empty() && !c.templates) {
    throw startup_error("LITTERBOX_POOL needs LITTERBOX_TEMPLATES=on (pool members are clones)");
  }
  if (c.max_body_bytes == 0) {
    throw startup_error("LITTERBOX_MAX_BODY_BYTES must be positive");
  }
}

/// The key of Idempotency-Key fingerprints: made once (0600) in the state dir and read back by
/// every later start, so replays survive restarts. O_EXCL lets one of several processes
/// starting together make it; the others read what it wrote.
std::string load_idempotency_secret(const std::filesystem::path& state_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(state_dir, ec);
  const fs::path path = state_dir / "idempotency-secret";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) {
    const std::string fresh = random_hex(32) + "\n";
    const bool written =
        ::write(fd, fresh.data(), fresh.size()) == static_cast<ssize_t>(fresh.size());
    if (::fsync(fd) != 0 || ::close(fd) != 0 || !written) {
      fs::remove(path, ec);
      throw startup_error("cannot write " + path.string());
    }
  } else if (errno != EEXIST) {
    throw startup_error("cannot create " + path.string() + ": " + std::strerror(errno));
  }
  for (int attempt = 0; attempt < 50; ++attempt) {
    std::ifstream in(path);
    std::string secret;
    std::getline(in, secret);
    if (secret.size() == 64) {
      return secret;
    }
    // Another process is between its open and its write.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  throw startup_error(path.string() + " does not hold a 64-digit key; remove it to make a new one");
}

void setup_logs(const options& o) {
  setup_logging(o.cfg.log_level, o.cfg.log_json ? log_format::json : log_format::text);
}

/// Newest-first guest kernel from /boot when none is configured, and the initrd made for it.
void resolve_guest_kernel(config& c) {
  namespace fs = std::filesystem;
  if (c.kernel.empty()) {
    fs::path best;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/boot", ec)) {
      const auto name = e.path().filename().string();
      if (name.rfind("vmlinuz-", 0) == 0 && (best.empty() || e.path() > best)) {
        best = e.path();
      }
    }
    if (best.empty()) {
      throw startup_error(
          "no guest kernel: set LITTERBOX_KERNEL or install linux-image-amd64 (/boot/vmlinuz-*)");
    }
    c.kernel = best.string();
  }
  if (c.initrd.empty()) {
    const auto name = fs::path(c.kernel).filename().string();
    c.initrd = (fs::path(c.kernel).parent_path() /
                ("initrd.img-" + name.substr(std::string_view("vmlinuz-").size())))
                   .string();
  }
}

/// The hypervisor named by cfg.hypervisor with everything it needs to outlive it.
struct hypervisor_stack {
  std::unique_ptr<hypervisor::image::image_store> images;
  std::unique_ptr<hypervisor::base_images> bases;
  std::unique_ptr<hypervisor::driver> driver;
};

hypervisor::fake_options fake_options_for(const options& o,
                                          hypervisor::guest_listener_sink* guest_listeners,
                                          const std::string& sub = {});

/// `guest_listeners`: where the driver hands the guest proxy listeners (null: none).
hypervisor_stack make_hypervisor(const options& o,
                                 hypervisor::guest_listener_sink* guest_listeners = nullptr) {
  hypervisor_stack stack;
  if (o.cfg.hypervisor == "libvirt") {
    hypervisor::image::store_config ic;
    ic.state_dir = o.cfg.state_dir;
    ic.insecure_registries = split(o.insecure_registries, ',');
    ic.auth_file = o.registry_auth_file;
    ic.kernel_modules_dir = hypervisor::image::modules_dir_for_kernel(o.cfg.kernel);
    ic.size_budget_bytes = static_cast<std::uint64_t>(o.image_cache_gb) << 30U;
    ic.max_image_bytes = static_cast<std::uint64_t>(o.image_max_gb) << 30U;
    ic.max_image_entries = static_cast<std::uint64_t>(o.image_max_entries);
    ic.overlay_max_bytes = static_cast<std::uint64_t>(o.overlay_max_gb) << 30U;
    stack.images = std::make_unique<hypervisor::image::image_store>(std::move(ic));
    stack.bases = std::make_unique<hypervisor::image::image_store_bases>(*stack.images);
    hypervisor::libvirt_config lv;
    lv.uri = o.cfg.libvirt_uri;
    lv.accel = o.cfg.accel;
    lv.state_dir = o.cfg.state_dir;
    lv.kernel = o.cfg.kernel;
    lv.initrd = o.cfg.initrd;
    lv.guest_internet = o.guest_internet;
    lv.guest_egress = o.guest_egress_entries;
    lv.owner = o.owner;
    lv.guest_listeners = guest_listeners;
    lv.ssh_port_min = o.cfg.ssh_port_min;
    lv.ssh_port_max = o.cfg.ssh_port_max;
    lv.clock = o.clone_clock == "set-time" ? hypervisor::clone_clock::set_time
                                           : hypervisor::clone_clock::date;
    stack.driver = std::make_unique<hypervisor::libvirt_driver>(std::move(lv), *stack.bases);
    return stack;
  }
  stack.driver = std::make_unique<hypervisor::fake_driver>(fake_options_for(o, guest_listeners));
  return stack;
}

/// Options of the fake hypervisor's node, from the flags; `sub` names a further node's own
/// directory under the fake state directory (empty: the node serve runs on).
hypervisor::fake_options fake_options_for(const options& o,
                                          hypervisor::guest_listener_sink* guest_listeners,
                                          const std::string& sub) {
  hypervisor::fake_options f;
  f.pull_delay = std::chrono::milliseconds(o.fake_pull_delay_ms);
  f.create_delay = std::chrono::milliseconds(o.fake_create_delay_ms);
  f.boot_delay = std::chrono::milliseconds(o.fake_boot_delay_ms);
  f.destroy_delay = std::chrono::milliseconds(o.fake_destroy_delay_ms);
  f.template_delay = std::chrono::milliseconds(o.fake_template_delay_ms);
  f.restore_delay = std::chrono::milliseconds(o.fake_restore_delay_ms);
  f.login_delay = std::chrono::milliseconds(o.fake_login_delay_ms);
  f.guest_listeners = guest_listeners;
  if (!o.fake_state_dir.empty()) {
    f.state_dir = std::filesystem::path(o.fake_state_dir);
  } else if (!o.cfg.state_dir.empty()) {
    f.state_dir = o.cfg.state_dir / "fake";
  }
  if (f.state_dir && !sub.empty()) {
    f.state_dir = *f.state_dir / "nodes" / sub;
  }
  if (f.state_dir) {
    std::error_code ec;
    std::filesystem::create_directories(*f.state_dir, ec);
    if (ec) {
      throw startup_error("cannot create the fake state directory " + f.state_dir->string() + ": " +
                          ec.message());
    }
  }
  return f;
}

bool is_fake_uri(std::string_view uri) {
  return uri.rfind("fake://", 0) == 0;
}

// What `node add` learns of a node. fake:// URIs are nodes of the fake hypervisor (for
// placement tests and benchmarks), as roomy as serve's own fake node. A libvirt node other
// than the machine serve runs on needs its disks, seeds and templates through libvirt's
// storage API, which this version does not have yet.
result<hypervisor::node_info> ask_node(std::string_view uri) {
  if (is_fake_uri(uri)) {
    auto info = hypervisor::fake_options{}.node;
    info.uri = std::string(uri);
    return info;
  }
  return make_error(controlplane::errc::validation,
                    "cannot add " + std::string(uri) +
                        ": this version drives only the libvirt of the machine litterboxd "
                        "serves on (remote libvirt nodes are not supported yet) and fake:// "
                        "nodes of the fake hypervisor");
}

void run_migrations(const config& c) {
  auto applied = controlplane::migrate(c.database_url);
  if (!applied) {
    throw startup_error("database migration failed: " + applied.error().message);
  }
  spdlog::info("database schema up to date ({} migration(s) applied)", *applied);
}

/// Writes the bound port so that whoever started us (tests bind port 0) can find it; the
/// rename makes the file appear complete or not at all.
void write_port_file(const std::string& path, int port) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << '\n';
    if (!out) {
      throw startup_error("cannot write the port file " + path);
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    throw startup_error("cannot write the port file " + path + ": " + ec.message());
  }
}

controlplane::pg::session_limits db_limits(const controlplane::config& c) {
  controlplane::pg::session_limits l;
  l.statement_timeout = c.db_statement_timeout;
  l.lock_timeout = c.db_lock_timeout;
  l.idle_in_transaction_timeout = c.db_idle_in_transaction_timeout;
  l.tcp_timeout = c.db_tcp_timeout;
  return l;
}

// Registers the machine the driver runs guests on as a node and returns its id: every host
// this process creates is placed on it. A node that cannot be asked now (libvirtd away)
// keeps what it reported last time; one never seen before cannot be served without it.
controlplane::node_record join_node(const controlplane::config& cfg, controlplane::store& db,
                                    hypervisor::driver& driver, const clock& clk) {
  auto info = driver.node();
  if (!info) {
    auto known = db.list_nodes();
    if (!known) {
      throw startup_error("cannot read the nodes: " + known.error().message);
    }
    for (const auto& n : *known) {
      if (n.uri == cfg.libvirt_uri) {
        spdlog::warn(
            "node {}: cannot ask it for its size ({}); placing on what it reported "
            "last",
            n.uri, info.error().message);
        return n;
      }
    }
    throw startup_error("cannot register the node: " + info.error().message);
  }
  auto node = db.register_node({info->uri, cfg.ssh_host, info->cpus, info->memory_mib}, clk.now());
  if (!node) {
    throw startup_error("cannot register the node " + info->uri + ": " + node.error().message);
  }
  spdlog::info("node {} ({}): {}, {} vCPUs and {} MiB for guests, {} hosts on it", node->uri,
               node->id, to_string(node->state), node->cpu_capacity(), node->memory_capacity(),
               node->hosts);
  return *node;
}

// Where the database says a host or template is: its row's node.
hypervisor::node_locator locate_in(controlplane::store& db) {
  return [&db](std::string_view id) -> result<std::optional<std::string>> {
    auto host = db.get_host(id);
    if (host) {
      return host->node_id;
    }
    if (host.error().code != controlplane::errc::not_found) {
      return host.error();
    }
    auto templates = db.list_templates();
    if (!templates) {
      return templates.error();
    }
    for (const auto& t : *templates) {
      if (t.id == id) {
        return t.node_id;
      }
    }
    return std::optional<std::string>();
  };
}

// Keeps a fleet driving every node of the database this process can drive: checked at
// start and every `interval`, so that a node `litterboxd node add` records is picked up by
// every serving replica without a restart. A node it cannot drive is logged once and gets
// no hosts from this process (placement only offers the nodes the fleet drives). Each pass
// also asks every node whether it answers: creates go past one that does not.
class node_follower {
 public:
  using maker =
      std::function<std::shared_ptr<hypervisor::driver>(const controlplane::node_record&)>;
  node_follower(controlplane::store& db, hypervisor::fleet_driver& fleet, maker make,
                std::chrono::milliseconds interval)
      : db_(db), fleet_(fleet), make_(std::move(make)), interval_(interval) {}
  ~node_follower() { stop(); }
  node_follower(const node_follower&) = delete;
  node_follower& operator=(const node_follower&) = delete;

  void refresh() {
    auto nodes = db_.list_nodes();
    if (!nodes) {
      spdlog::warn("cannot read the nodes: {}", nodes.error().message);
      return;
    }
    for (const auto& n : *nodes) {
      if (fleet_.drives(n.id) || skipped_.count(n.id) != 0) {
        continue;
      }
      if (auto d = make_(n)) {
        fleet_.add_node(n.id, n.uri, std::move(d));
        spdlog::info("node {} ({}): driven from now on, {} vCPUs and {} MiB for guests", n.uri,
                     n.id, n.cpu_capacity(), n.memory_capacity());
      } else {
        skipped_.insert(n.id);
        spdlog::warn("node {} ({}): this litterboxd cannot drive it; it places no hosts there",
                     n.uri, n.id);
      }
    }
  }

  void start() {
    thread_ = std::thread([this] {
      std::unique_lock lock(mutex_);
      while (!cv_.wait_for(lock, interval_, [this] { return stopping_; })) {
        lock.unlock();
        refresh();
        fleet_.check_nodes();
        lock.lock();
      }
    });
  }

  void stop() {
    {
      const std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) {
      thread_.join();
    }
  }

 private:
  controlplane::store& db_;
  hypervisor::fleet_driver& fleet_;
  maker make_;
  std::chrono::milliseconds interval_;
  std::set<std::string> skipped_;  // touched by refresh only: one caller at a time
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

// The drivers of further nodes: fake:// nodes when serving the fake hypervisor, each in a
// directory of its own under the fake state directory (shared by replicas, as the first).
node_follower::maker further_nodes(const options& o, hypervisor::guest_listener_sink* sink) {
  return [&o, sink](const controlplane::node_record& n) -> std::shared_ptr<hypervisor::driver> {
    if (o.cfg.hypervisor != "fake" || !is_fake_uri(n.uri)) {
      return nullptr;
    }
    auto f = fake_options_for(o, sink, n.id);
    f.node = {n.uri, n.cpus, n.memory_mib};
    return std::make_shared<hypervisor::fake_driver>(std::move(f));
  };
}

int serve(options& o) {
  run_migrations(o.cfg);
  o.cfg.idempotency_secret = load_idempotency_secret(o.cfg.state_dir);
  const system_clock clock;
  controlplane::http::prometheus_metrics stats;
  controlplane::pg_store db(o.cfg.database_url, static_cast<std::size_t>(o.cfg.db_pool_size),
                            std::chrono::seconds(5), db_limits(o.cfg));
  auto proxy_allow = controlplane::parse_proxy_allow(o.cfg.http_proxy_allow);
  if (!proxy_allow) {
    throw startup_error(proxy_allow.error().message);
  }
  // The guest-facing end of the HTTP proxies: the driver hands it one listener per host.
  controlplane::http::guest_gateway_options gw;
  gw.max_connections_per_host = o.cfg.guest_proxy_max_connections;
  gw.connect_timeout = o.cfg.guest_proxy_connect_timeout;
  gw.idle_timeout = o.cfg.guest_proxy_idle_timeout;
  controlplane::http::guest_gateway gateway(gw, db, *proxy_allow, stats);
  auto hv = make_hypervisor(o, &gateway);
  const auto home = join_node(o.cfg, db, *hv.driver, clock);
  o.cfg.node_id = home.id;
  const std::string provider(hv.driver->provider());
  hypervisor::fleet_driver fleet(
      home.id, home.uri, std::shared_ptr<hypervisor::driver>(std::move(hv.driver)), locate_in(db));
  node_follower follower(db, fleet, further_nodes(o, &gateway), std::chrono::seconds(5));
  follower.refresh();
  const auto instance_id = new_uuid_v7(clock.now());
  controlplane::host_service hosts(o.cfg, db, fleet, clock, instance_id, &stats);
  controlplane::maintenance upkeep(o.cfg, db, fleet, clock, instance_id);
  controlplane::reaper reaper(o.cfg, db, hosts, upkeep, clock, stats);
  controlplane::proxy_service proxies(db, clock, std::move(*proxy_allow));
  controlplane::reconciler vms(o.cfg, db, fleet, clock, [&hosts](const std::string& id) {
    return hosts.provisioning_here(id);
  });
  // Its own connection, with the same TCP bounds: a dead server is noticed and re-dialled.
  controlplane::pg::event_listener event_wakes(
      controlplane::pg::with_session_limits(o.cfg.database_url, db_limits(o.cfg)).value(),
      controlplane::pg::k_events_channel, [&hosts] { hosts.events().poke(); });
  controlplane::key_service keys(o.cfg.service_tokens, o.cfg.idempotency_secret, db, clock,
                                 {o.cfg.key_rate_limit, o.cfg.key_rate_burst});
  // Every key change on any replica empties this process's key cache; while the listener is
  // disconnected every scoped key is checked against the database.
  controlplane::pg::event_listener key_wakes(
      controlplane::pg::with_session_limits(o.cfg.database_url, db_limits(o.cfg)).value(),
      controlplane::pg::k_keys_channel, [&keys] { keys.keys_changed(); },
      [&keys] { keys.listener_lost(); });
  controlplane::http::http_server server(o.cfg, hosts, stats, keys, &proxies);
  server.start();
  gateway.start();
  if (!o.port_file.empty()) {
    write_port_file(o.port_file, server.port());
  }
  // SIGTERM: no new connections; queued creates fail, running ones get LITTERBOX_SHUTDOWN_DRAIN
  // and the callers waiting for them their answers; then the server stops.
  server.stop_on_signals([&reaper, &vms, &hosts] {
    reaper.stop();
    vms.stop();
    hosts.shutdown();
  });
  follower.start();
  reaper.start_loop();
  hosts.start_background();
  vms.start_loop();
  event_wakes.start();
  key_wakes.start();
  spdlog::info("litterboxd {} serving on port {} (hypervisor {})", instance_id, server.port(),
               provider);
  server.run();
  spdlog::info("stopping: finishing in-flight work");
  event_wakes.stop();
  key_wakes.stop();
  follower.stop();
  reaper.stop();
  vms.stop();
  hosts.shutdown();
  gateway.stop();
  spdlog::info("stopped");
  return 0;
}

int reap_once(options& o) {
  const system_clock clock;
  controlplane::null_observer observer;
  controlplane::pg_store db(o.cfg.database_url, 2, std::chrono::seconds(5), db_limits(o.cfg));
  auto hv = make_hypervisor(o);
  // The nodes as serve drives them, so that a host on any of them is torn down where it is.
  auto info = hv.driver->node();
  std::string home_id;
  if (auto nodes = db.list_nodes(); nodes && info) {
    for (const auto& n : *nodes) {
      if (n.uri == info->uri) {
        home_id = n.id;
      }
    }
  }
  o.cfg.node_id = home_id;
  hypervisor::fleet_driver fleet(home_id, info ? info->uri : o.cfg.libvirt_uri,
                                 std::shared_ptr<hypervisor::driver>(std::move(hv.driver)),
                                 locate_in(db));
  node_follower follower(db, fleet, further_nodes(o, nullptr), std::chrono::seconds(5));
  follower.refresh();
  controlplane::host_service hosts(o.cfg, db, fleet, clock, new_uuid_v7(clock.now()), &observer);
  controlplane::maintenance upkeep(o.cfg, db, fleet, clock);
  controlplane::reaper reaper(o.cfg, db, hosts, upkeep, clock, observer);
  const auto report = reaper.run_once();
  hosts.shutdown();
  return report.database_ok && report.failed == 0 ? 0 : 1;
}

int run(int argc, char** argv) {
  CLI::App app{"litterbox control plane: disposable Linux VMs over SSH"};
  app.require_subcommand(1);
  options o;
  o.cfg.default_image = "127.0.0.1:5000/litterbox/debian:12";

  auto* serve_cmd = app.add_subcommand("serve", "Serve the HTTP API");
  add_config_options(*serve_cmd, o);
  serve_cmd->add_option("--port-file", o.port_file, "Write the bound port here once listening");

  auto* migrate_cmd = app.add_subcommand("migrate", "Apply database migrations and exit");
  migrate_cmd->add_option("--database-url", o.cfg.database_url, "PostgreSQL connection URL")
      ->envname("DATABASE_URL");
  migrate_cmd->add_option("--log-level", o.cfg.log_level)
      ->envname("LITTERBOX_LOG_LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  migrate_cmd->add_option("--log-format", o.log_format)
      ->envname("LITTERBOX_LOG_FORMAT")
      ->check(CLI::IsMember({"text", "json"}));

  auto* reap_cmd = app.add_subcommand(
      "reap", "One reaper pass (expired hosts, interrupted creates, orphans), then exit");
  add_config_options(*reap_cmd, o);

  node_command node;
  auto* node_cmd = add_node_command(app, node);

  // serve and reap bind the same variables. CLI11 reads the environment into every option of
  // a subcommand without a parse-complete callback, parsed or not — so the unparsed one wrote
  // the environment's value over a flag given to the parsed one. With a callback each
  // subcommand reads the environment only when it is the one parsed: flags win.
  for (auto* sub : {serve_cmd, migrate_cmd, reap_cmd, node_cmd}) {
    sub->parse_complete_callback([] {});
  }
  try {
    apply_config_file(app, argc, argv);
  } catch (const config_file_error& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  o.cfg.log_json = o.log_format == "json";
  setup_logs(o);
  try {
    if (node_cmd->parsed()) {
      if (node.database_url.empty()) {
        throw startup_error("DATABASE_URL is required");
      }
      o.cfg.database_url = node.database_url;
      const system_clock clock;
      controlplane::pg_store db(node.database_url, 1, std::chrono::seconds(5), db_limits(o.cfg));
      return run_node_command(node, db, clock, ask_node);
    }
    if (migrate_cmd->parsed()) {
      if (o.cfg.database_url.empty()) {
        throw startup_error("DATABASE_URL is required");
      }
      run_migrations(o.cfg);
      return 0;
    }
    finish_config(o, serve_cmd->parsed());
    setup_logs(o);
    if (serve_cmd->parsed()) {
      return serve(o);
    }
    return reap_once(o);
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }
}

}  // namespace
}  // namespace litterbox::litterboxd

int main(int argc, char** argv) {
  // This process holds DATABASE_URL, SERVICE_TOKENS and minted private keys: no core dumps,
  // and no ptrace or /proc/<pid>/{mem,environ} for other processes of the same user.
  // Before anything else, so that no secret is ever held while dumpable.
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  try {
    return litterbox::litterboxd::run(argc, argv);
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
  } catch (...) {
    spdlog::critical("unexpected failure");
  }
  return EXIT_FAILURE;
}
