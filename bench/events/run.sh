#!/usr/bin/env bash
# Event streams under load: does GET /hosts/{id} slow down while many clients stream?
#
#   bench/events/run.sh [--no-build] [--duration SECONDS] [--streams N] [--creates-per-s R]
#
# In one run on this machine: a throw-away PostgreSQL cluster, `litterboxd serve
# --hypervisor=fake`, a steady trickle of creates (R per second, each ~5 events) for the whole
# run, then wrk GET /hosts/{id} twice — without streams, and with N clients on GET /events
# (one Python process holding N sockets, counting the events it receives). Prints a Markdown
# table; LITTERBOX_BIN=PATH uses that litterboxd instead of building one.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"

build=1
duration=10
streams=200
rate=4
while (($#)); do
  case "$1" in
    --no-build) build=0; shift ;;
    --duration) duration="$2"; shift 2 ;;
    --streams) streams="$2"; shift 2 ;;
    --creates-per-s) rate="$2"; shift 2 ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) lb_die "unknown argument $1 (see --help)" ;;
  esac
done
((EUID == 0)) || lb_die "run as root (the cluster runs as the postgres user)"
for tool in wrk curl jq python3; do
  command -v "$tool" >/dev/null || lb_die "$tool missing: run scripts/install-deps"
done

bin="${LITTERBOX_BIN:-}"
if [[ -z "$bin" ]]; then
  if ((build)); then
    "$LB_ROOT/scripts/build" litterboxd
  fi
  bin="$(lb_litterboxd "$(lb_build_dir)")"
fi
[[ -x "$bin" ]] || lb_die "$bin not found; run scripts/build"

work="$(mktemp -d /tmp/litterbox-bench-events.XXXXXX)"
chmod 0755 "$work"
export PG_DIR="$work/pg" PG_AUTH=trust PG_MAX_CONNECTIONS=100
source "$LB_ROOT/scripts/lib/pg.sh"
server=""
trickle=""
listeners=""
cleanup() {
  for p in "$listeners" "$trickle" "$server"; do
    if [[ -n "$p" ]]; then
      kill -TERM "$p" 2>/dev/null || true
      wait "$p" 2>/dev/null || true
    fi
  done
  pg_stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started=0
for _ in 1 2 3 4 5; do
  PG_PORT="$(lb_free_port)"
  if pg_start; then
    started=1
    break
  fi
done
((started)) || lb_die "could not start the benchmark PostgreSQL cluster"
pg_psql -d postgres -c 'CREATE DATABASE litterbox_bench'

export DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/litterbox_bench"
export SERVICE_TOKENS
SERVICE_TOKENS="$(lb_random_hex 16)"
export LITTERBOX_STATE_DIR="$work/state"
export LITTERBOX_LOG_LEVEL="${LITTERBOX_LOG_LEVEL:-warn}"
export LITTERBOX_SSH_PORTS="${LITTERBOX_SSH_PORTS:-10000-65000}"
# Streams hold connections: leave room for them next to wrk's.
export LITTERBOX_MAX_CONNECTIONS=$((streams + 256))
mkdir -p "$LITTERBOX_STATE_DIR"
"$bin" migrate >"$work/migrate.log" 2>&1 || {
  cat "$work/migrate.log" >&2
  lb_die "migrate failed"
}
"$bin" serve --hypervisor fake --listen 127.0.0.1:0 --port-file "$work/port" \
  >"$work/server.log" 2>&1 &
server=$!
if ! lb_wait_for_file "$work/port" 30 "$server"; then
  tail -n 30 "$work/server.log" >&2
  lb_die "litterboxd did not start"
fi
port="$(tr -d '[:space:]' <"$work/port")"
url="http://127.0.0.1:$port"
auth="Authorization: Bearer $SERVICE_TOKENS"
id="$(curl -fsS -X POST -H "$auth" -d '{}' "$url/hosts" | jq -r .id)"
[[ "$id" =~ ^[0-9a-f-]{36}$ ]] || lb_die "creating the benchmark host failed"

# The same trickle of state changes in both phases: only the streams differ.
(
  while :; do
    curl -fsS -o /dev/null -X POST -H "$auth" -H 'Prefer: respond-async' -d '{}' "$url/hosts" || true
    sleep "$(awk -v r="$rate" 'BEGIN { printf "%.3f", 1 / r }')"
  done
) &
trickle=$!

to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.2f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.2f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.2f", v * 1000 }
    else print "?" }'
}
wrk_rps() { awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$1"; }
wrk_p(){ to_ms "$(awk -v q="$2" '$1 == q { print $2 }' "$1")"; }

lb_log "wrk GET /hosts/{id} without streams: ${duration}s"
wrk -t2 -c16 -d"${duration}s" --timeout 10s --latency -H "$auth" "$url/hosts/$id" >"$work/base.txt"

lb_log "opening $streams event streams"
python3 - "$port" "$SERVICE_TOKENS" "$streams" "$work/listeners.out" <<'PY' &
import selectors, signal, socket, sys
port, token, n, out = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
sel = selectors.DefaultSelector()
events = 0
opened = 0
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    opened += 1
def done(*_):
    with open(out, "w") as f:
        f.write(f"{opened} {events}\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
while True:
    for key, _ in sel.select():
        data = key.fileobj.recv(65536)
        if not data:
            sel.unregister(key.fileobj)
            continue
        events += data.count(b"\nid: ") + data.startswith(b"id: ")
PY
listeners=$!
# Every stream is open once the server counts them as connections answered with a head.
for _ in $(seq 1 100); do
  open="$(ss -Htn state established "( sport = :$port )" | wc -l)"
  ((open >= streams)) && break
  sleep 0.1
done
lb_log "wrk GET /hosts/{id} with $streams streams: ${duration}s"
wrk -t2 -c16 -d"${duration}s" --timeout 10s --latency -H "$auth" "$url/hosts/$id" >"$work/streams.txt"
kill -TERM "$listeners"
wait "$listeners" 2>/dev/null || true
listeners=""
read -r opened received <"$work/listeners.out"
kill -TERM "$trickle" 2>/dev/null || true
wait "$trickle" 2>/dev/null || true
trickle=""

cat <<TABLE

litterbox event-stream benchmark — $(nproc) cores, ${duration}s per row, wrk -t2 -c16, $rate creates/s throughout
| GET /hosts/{id} | req/s | p50 | p99 |
|---|---:|---:|---:|
| no streams | $(wrk_rps "$work/base.txt") | $(wrk_p "$work/base.txt" 50%) ms | $(wrk_p "$work/base.txt" 99%) ms |
| $opened streams open | $(wrk_rps "$work/streams.txt") | $(wrk_p "$work/streams.txt" 50%) ms | $(wrk_p "$work/streams.txt" 99%) ms |

events delivered to the $opened streams during the second row: $received
TABLE
