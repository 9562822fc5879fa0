# shellcheck shell=bash
# An embedded PostgreSQL 15 cluster owned by litterbox. Sourced after common.sh.
#
# Layout under PG_DIR (default "$LITTERBOX_STATE_DIR/pg"):
#   data/       the cluster (owned by the postgres user: initdb and postgres refuse root)
#   run/        the Unix socket, mode 0700: only postgres (and root) can reach it
#   password    the generated password of the `litterbox` role (0600, owner root)
#   server.log  the server log
#
# Authentication, chosen by PG_AUTH:
#   password (default, scripts/up): the socket trusts only the postgres superuser (and the
#     socket directory admits nobody else); TCP on 127.0.0.1 requires scram-sha-256. The
#     service connects as role `litterbox` to database `litterbox` with a generated password.
#   trust (throw-away clusters of scripts/test and the benchmarks): everything on the socket
#     and on 127.0.0.1 is trusted, and pg_url names the postgres superuser.
#
# Functions: pg_ensure_cluster, pg_start, pg_stop, pg_url, pg_psql, pg_ensure_app_db.

PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_DIR="${PG_DIR:-$LITTERBOX_STATE_DIR/pg}"
PG_PORT="${PG_PORT:-${LITTERBOX_PG_PORT:-5433}}"
PG_AUTH="${PG_AUTH:-password}"
PG_MAX_CONNECTIONS="${PG_MAX_CONNECTIONS:-200}"

_pg_as_postgres() { runuser -u postgres -- "$@"; }

# pg_ensure_cluster: creates the cluster in PG_DIR unless it exists. Idempotent.
pg_ensure_cluster() {
  id postgres >/dev/null 2>&1 || lb_die "no postgres user: run scripts/install-deps"
  [[ -x "$PG_BIN/initdb" ]] || lb_die "$PG_BIN/initdb missing: run scripts/install-deps"
  mkdir -p "$PG_DIR"
  # The parents must be traversable for postgres (and, for the state dir, libvirt-qemu).
  chmod 0755 "$PG_DIR"
  mkdir -p "$PG_DIR/run"
  chown postgres:postgres "$PG_DIR/run"
  chmod 0700 "$PG_DIR/run"
  touch "$PG_DIR/server.log"
  chown postgres:postgres "$PG_DIR/server.log"
  chmod 0600 "$PG_DIR/server.log"

  if [[ "$PG_AUTH" == password && ! -s "$PG_DIR/password" ]]; then
    (
      umask 077
      lb_random_hex 24 >"$PG_DIR/password"
    )
  fi

  if [[ -f "$PG_DIR/data/PG_VERSION" ]]; then
    _pg_write_config
    return 0
  fi
  # A half-made cluster from an interrupted initdb is useless; start over.
  rm -rf "$PG_DIR/data"
  mkdir -p "$PG_DIR/data"
  chown postgres:postgres "$PG_DIR/data"
  chmod 0700 "$PG_DIR/data"
  lb_log "initializing PostgreSQL cluster in $PG_DIR/data"
  _pg_as_postgres "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=reject >"$PG_DIR/initdb.log" 2>&1 ||
    {
      cat "$PG_DIR/initdb.log" >&2
      lb_die "initdb failed"
    }
  echo "include_if_exists = 'litterbox.conf'" >>"$PG_DIR/data/postgresql.conf"
  _pg_write_config
}

# Rewritten on every start so that a changed port or auth mode takes effect.
_pg_write_config() {
  local hba_tcp="scram-sha-256" hba_local_user="postgres"
  if [[ "$PG_AUTH" == trust ]]; then
    hba_tcp="trust"
    hba_local_user="all"
  fi
  cat >"$PG_DIR/data/litterbox.conf" <<CONF
# written by scripts/lib/pg.sh on every start; edits are lost
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DIR/run'
unix_socket_permissions = 0700
max_connections = $PG_MAX_CONNECTIONS
password_encryption = 'scram-sha-256'
CONF
  cat >"$PG_DIR/data/pg_hba.conf" <<HBA
# written by scripts/lib/pg.sh on every start; edits are lost
# TYPE  DATABASE  USER               ADDRESS        METHOD
local   all       $hba_local_user    trust
host    all       all                127.0.0.1/32   $hba_tcp
HBA
  chown postgres:postgres "$PG_DIR/data/litterbox.conf" "$PG_DIR/data/pg_hba.conf"
  chmod 0600 "$PG_DIR/data/litterbox.conf" "$PG_DIR/data/pg_hba.conf"
}

# _pg_running: true when the postmaster named in postmaster.pid is alive and really is a
# postgres process serving this data directory (after a crash the pid may belong to anyone).
_pg_running() {
  local pidfile="$PG_DIR/data/postmaster.pid" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(head -n1 "$pidfile" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "postgres" || return 1
  [[ "$(readlink -f "/proc/$pid/cwd" 2>/dev/null)" == "$(readlink -f "$PG_DIR/data")" ]]
}

# pg_start: starts the cluster and waits until it accepts connections. A no-op when it is
# already running; a stale postmaster.pid left by a crash is removed first. Returns 1 when
# the server cannot start (e.g. PG_PORT is taken) so that callers may pick another port.
pg_start() {
  pg_ensure_cluster
  if _pg_running; then
    lb_log "PostgreSQL already running in $PG_DIR (port $(_pg_running_port))"
    _pg_wait_ready
    return 0
  fi
  if [[ -f "$PG_DIR/data/postmaster.pid" ]]; then
    lb_warn "removing stale $PG_DIR/data/postmaster.pid"
    rm -f "$PG_DIR/data/postmaster.pid"
  fi
  rm -f "$PG_DIR/run"/.s.PGSQL.*
  if lb_port_in_use "$PG_PORT"; then
    lb_warn "port $PG_PORT is taken by another process (set LITTERBOX_PG_PORT)"
    return 1
  fi
  lb_log "starting PostgreSQL on 127.0.0.1:$PG_PORT ($PG_DIR)"
  # A session of its own: Ctrl-C in the terminal of scripts/up must not reach the postmaster
  # (SIGINT is its fast shutdown) before litterboxd has stopped.
  if ! _pg_as_postgres setsid -w "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    start >/dev/null; then
    tail -n 20 "$PG_DIR/server.log" >&2 || true
    return 1
  fi
  _pg_wait_ready
}

_pg_running_port() { sed -n 4p "$PG_DIR/data/postmaster.pid" 2>/dev/null; }

_pg_wait_ready() {
  local i port
  port="$(_pg_running_port)"
  for ((i = 0; i < 600; i++)); do
    if _pg_as_postgres "$PG_BIN/pg_isready" -q -h "$PG_DIR/run" -p "${port:-$PG_PORT}"; then
      return 0
    fi
    sleep 0.1
  done
  lb_die "PostgreSQL in $PG_DIR did not become ready"
}

# pg_stop: stops the cluster (fast shutdown) if it runs. Idempotent.
pg_stop() {
  if _pg_running; then
    lb_log "stopping PostgreSQL ($PG_DIR)"
    _pg_as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 60 stop >/dev/null ||
      lb_warn "pg_ctl stop failed for $PG_DIR"
  fi
}

# pg_psql [ARGS...]: psql as the superuser over the socket of the running cluster.
pg_psql() {
  local port
  port="$(_pg_running_port)"
  _pg_as_postgres "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR/run" -p "${port:-$PG_PORT}" \
    -U postgres "$@"
}

# pg_ensure_app_db: creates role and database `litterbox` (password mode) and keeps the
# role's password in step with PG_DIR/password. Idempotent; the cluster must be running.
pg_ensure_app_db() {
  [[ "$PG_AUTH" == password ]] || return 0
  local pw
  pw="$(cat "$PG_DIR/password")"
  pg_psql -d postgres -v pw="$pw" <<'SQL' >/dev/null
SELECT format('CREATE ROLE litterbox LOGIN PASSWORD %L', :'pw')
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'litterbox') \gexec
SELECT format('ALTER ROLE litterbox PASSWORD %L', :'pw') \gexec
SELECT 'CREATE DATABASE litterbox OWNER litterbox'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'litterbox') \gexec
SQL
}

# pg_url: the connection URL the service (or a test) should use.
pg_url() {
  local port
  port="$(_pg_running_port)"
  port="${port:-$PG_PORT}"
  if [[ "$PG_AUTH" == trust ]]; then
    echo "postgresql://postgres@127.0.0.1:$port/postgres"
  else
    echo "postgresql://litterbox:$(cat "$PG_DIR/password")@127.0.0.1:$port/litterbox"
  fi
}
