#pragma once

#include "base/result.hpp"

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace litterbox::controlplane {

/// A named size callers can ask for with `instance_type`.
struct instance_type_spec {
  std::string name;
  int cpus = 1;
  int memory_mib = 1024;
  std::optional<int> disk_gb;
};

/// One warm pool: `size` restored clones of `image` at one size kept ready for claims.
struct pool_spec {
  std::string image;
  int cpus = 1;
  int memory_mib = 1024;
  std::optional<int> disk_gb;
  int size = 0;
};

/// Everything litterboxd can be told (DESIGN.md "Configuration"). Each field is an
/// environment variable and a flag; litterboxd fills it, nothing else reads the environment.
struct config {
  std::string database_url;                    ///< DATABASE_URL
  std::vector<std::string> service_tokens;     ///< SERVICE_TOKENS (comma-separated)
  std::string listen = "127.0.0.1:8080";       ///< LITTERBOX_LISTEN
  std::string hypervisor = "libvirt";          ///< LITTERBOX_HYPERVISOR: libvirt | fake
  std::string libvirt_uri = "qemu:///system";  ///< LIBVIRT_URI
  std::string accel = "auto";                  ///< LITTERBOX_ACCEL: auto | kvm | tcg
  std::filesystem::path state_dir;             ///< LITTERBOX_STATE_DIR
  std::string ssh_host = "127.0.0.1";          ///< LITTERBOX_SSH_HOST
  /// The node this process places its hosts on (issue 14); serve sets it at start-up from
  /// the nodes table. Empty: no placement.
  std::string node_id;
  int ssh_port_min = 22000;  ///< LITTERBOX_SSH_PORTS "min-max"
  int ssh_port_max = 22999;
  std::string default_image = "127.0.0.1:5000/litterbox/debian:12";  ///< LITTERBOX_DEFAULT_IMAGE
  std::string kernel;                                                ///< LITTERBOX_KERNEL
  std::string initrd;                                                ///< LITTERBOX_INITRD
  std::chrono::seconds lease_default_ttl{86400};                     ///< LEASE_DEFAULT_TTL
  std::chrono::hours idempotency_key_ttl{24};                        ///< IDEMPOTENCY_KEY_TTL_HOURS
  std::chrono::seconds provision_timeout{600};                       ///< PROVISION_TIMEOUT
  std::chrono::seconds reap_interval{30};                            ///< LITTERBOX_REAP_INTERVAL
  std::chrono::seconds error_retention{600};                         ///< LITTERBOX_ERROR_RETENTION
  /// LITTERBOX_EVENT_RETENTION: host events older than this are pruned; resuming a stream
  /// from before the window is 410.
  std::chrono::seconds event_retention{86400};
  /// LITTERBOX_RECONCILE_INTERVAL: at least this often every active or bootstrapping host's
  /// VM is checked (besides each libvirt lifecycle event and reconnect).
  std::chrono::seconds reconcile_interval{10};
  /// How often event streams look for new events when no NOTIFY woke them (a safety net:
  /// PostgreSQL LISTEN/NOTIFY wakes them at once). Not a variable.
  std::chrono::milliseconds event_poll_interval{1000};
  int reap_concurrency = 8;  ///< LITTERBOX_REAP_CONCURRENCY: teardowns run at once per pass
  std::chrono::seconds heartbeat_interval{10};     ///< LITTERBOX_HEARTBEAT_INTERVAL
  std::string ssh_username = "agent";              ///< LITTERBOX_SSH_USERNAME
  int default_cpus = 1;                            ///< LITTERBOX_DEFAULT_CPUS
  int default_memory_mib = 1024;                   ///< LITTERBOX_DEFAULT_MEMORY_MIB
  int max_cpus = 8;                                ///< LITTERBOX_MAX_CPUS
  int max_memory_mib = 16384;                      ///< LITTERBOX_MAX_MEMORY_MIB
  int max_disk_gb = 200;                           ///< LITTERBOX_MAX_DISK_GB
  std::size_t max_env_bytes = 64 * 1024;           ///< LITTERBOX_MAX_ENV_BYTES
  std::size_t max_body_bytes = 1024 * 1024;        ///< LITTERBOX_MAX_BODY_BYTES
  std::size_t list_default_limit = 0;              ///< LITTERBOX_LIST_DEFAULT_LIMIT (0: all rows)
  std::size_t list_max_limit = 1000;               ///< LITTERBOX_LIST_MAX_LIMIT
  std::vector<instance_type_spec> instance_types;  ///< LITTERBOX_INSTANCE_TYPES
  int max_concurrent_provisions = 8;               ///< LITTERBOX_MAX_PROVISIONING
  /// LITTERBOX_MAX_QUEUED: creates admitted beyond those provisioning, waiting for a slot;
  /// past it a create is 503 CAPACITY before anything is reserved.
  int max_queued_provisions = 64;
  /// LITTERBOX_PROVISION_GRACE: how long after its deadline (admission + PROVISION_TIMEOUT)
  /// any process fails a create that has not settled, whoever owns it.
  std::chrono::seconds provision_grace{60};
  /// LITTERBOX_SHUTDOWN_DRAIN: on SIGTERM, how long creates already provisioning may run on;
  /// those still running then are failed and released.
  std::chrono::seconds shutdown_drain{30};
  /// Key of the Idempotency-Key fingerprints (HMAC-SHA256 of the request body), read from
  /// LITTERBOX_STATE_DIR/idempotency-secret; replicas sharing a database share it.
  std::string idempotency_secret;
  int http_threads = 2;  ///< LITTERBOX_HTTP_THREADS
  /// LITTERBOX_BLOCKING_THREADS: threads for request work that only touches the database;
  /// 0 = one per core. More than the cores only adds contention (and tail latency).
  int blocking_threads = 0;
  /// LITTERBOX_HYPERVISOR_THREADS: threads for request work that reaches the hypervisor
  /// (DELETE teardowns, console, doctor), which may block for seconds.
  int hypervisor_threads = 16;
  int db_pool_size = 8;                        ///< LITTERBOX_DB_POOL
  std::chrono::seconds http_idle_timeout{30};  ///< LITTERBOX_HTTP_IDLE_TIMEOUT
  std::string log_level = "info";              ///< LITTERBOX_LOG_LEVEL
  bool log_json = false;                       ///< LITTERBOX_LOG_FORMAT=json

  /// LITTERBOX_MAX_CONNECTIONS: HTTP connections served at once; more are answered 503
  /// CAPACITY and closed.
  int max_connections = 512;
  /// Bounds of every database session, added to DATABASE_URL unless it sets them itself
  /// (0: leave out): LITTERBOX_DB_STATEMENT_TIMEOUT, LITTERBOX_DB_LOCK_TIMEOUT,
  /// LITTERBOX_DB_IDLE_TX_TIMEOUT (idle_in_transaction_session_timeout) and
  /// LITTERBOX_DB_TCP_TIMEOUT (tcp_user_timeout; TCP keepalives are derived from it).
  std::chrono::seconds db_statement_timeout{30};
  std::chrono::seconds db_lock_timeout{5};
  std::chrono::seconds db_idle_in_transaction_timeout{60};
  std::chrono::seconds db_tcp_timeout{15};

  /// LITTERBOX_TEMPLATES: creates are cloned from saved templates (built in the background
  /// once per image digest and size) when one exists; off: every create boots from scratch.
  bool templates = true;
  /// LITTERBOX_TEMPLATE_TTL: a template nothing has cloned for this long is collected.
  std::chrono::seconds template_ttl{7 * 86400};
  /// LITTERBOX_TEMPLATE_RETRY: after a failed build, how long until it is tried again (an
  /// image that cannot be cloned is not tried again at all).
  std::chrono::seconds template_retry{600};
  /// LITTERBOX_POOL: warm pools, "count[:instance_type][@image]" comma-separated (default
  /// image and size when left out); empty: no pool.
  std::vector<pool_spec> pools;
  /// LITTERBOX_POOL_MAX_AGE: a pool member unclaimed this long is replaced.
  std::chrono::seconds pool_max_age{3600};
  /// LITTERBOX_POOL_REFILL_PER_MINUTE: members restored per minute at most, per process.
  int pool_refill_per_minute = 12;
  /// LITTERBOX_HTTP_PROXY_ALLOW: comma-separated CIDRs, addresses or host:port that HTTP
  /// proxy targets may use although loopback, link-local, private or this machine's.
  std::string http_proxy_allow;
  /// LITTERBOX_GUEST_PROXY_MAX_CONNECTIONS: connections one guest may have open to
  /// proxy.litterbox.internal at once; more are answered 503 and closed.
  int guest_proxy_max_connections = 64;
  /// LITTERBOX_GUEST_PROXY_CONNECT_TIMEOUT: TCP connect plus TLS handshake to a proxy target.
  std::chrono::seconds guest_proxy_connect_timeout{10};
  /// LITTERBOX_GUEST_PROXY_IDLE_TIMEOUT: the longest wait for any read or write of a proxied
  /// exchange (guest or target side), and for a guest's next request on an idle connection.
  std::chrono::seconds guest_proxy_idle_timeout{60};
  /// LITTERBOX_KEY_RATE_LIMIT: requests per second one scoped key may make of one process
  /// (0: no limit); admin tokens are never limited. LITTERBOX_KEY_RATE_BURST: how many it may
  /// make at once after a quiet spell.
  double key_rate_limit = 50;
  double key_rate_burst = 100;
};

/// Parses LITTERBOX_POOL ("2", "4:medium@registry/repo:tag,1") against the instance types
/// and default image and size of `cfg`. Errors: validation naming the bad entry.
result<std::vector<pool_spec>> parse_pools(std::string_view text, const config& cfg);

/// The sizes every deployment offers unless LITTERBOX_INSTANCE_TYPES says otherwise.
std::vector<instance_type_spec> default_instance_types();

}  // namespace litterbox::controlplane
