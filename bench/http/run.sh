#!/usr/bin/env bash
# HTTP benchmark: litterboxd (fake hypervisor, no delays) against plain PostgreSQL.
#
#   bench/http/run.sh [--no-build] [--duration SECONDS] [--connections N]
#
# In one run on this machine: a throw-away PostgreSQL cluster, `litterboxd serve
# --hypervisor=fake`, one host created, then wrk against GET /hosts/{id} and POST /hosts,
# then pgbench -S on the same cluster. Prints a table (Markdown) with req/s, p99 latency and
# the GET/pgbench ratio. Targets: GET >= 0.5x pgbench -S TPS, GET p99 < 10 ms. wrk counts a
# request as an error after 10 s. BENCH_KEEP=DIR keeps the raw wrk/pgbench outputs there.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"

build=1
duration=15
connections=64
while (($#)); do
  case "$1" in
    --no-build) build=0; shift ;;
    --duration) duration="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    *) lb_die "unknown argument $1 (see --help)" ;;
  esac
done
((EUID == 0)) || lb_die "run as root (the cluster runs as the postgres user)"
for tool in wrk pgbench curl jq; do
  command -v "$tool" >/dev/null || lb_die "$tool missing: run scripts/install-deps"
done

if ((build)); then
  "$LB_ROOT/scripts/build" litterboxd
fi
bin="$(lb_litterboxd "$(lb_build_dir)")"
[[ -x "$bin" ]] || lb_die "$bin not found; run scripts/build"

work="$(mktemp -d /tmp/litterbox-bench.XXXXXX)"
chmod 0755 "$work"
export PG_DIR="$work/pg" PG_AUTH=trust PG_MAX_CONNECTIONS=300
source "$LB_ROOT/scripts/lib/pg.sh"
server=""
cleanup() {
  if [[ -n "$server" ]]; then
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
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
pg_psql -d postgres -c 'CREATE DATABASE litterbox_bench' -c 'CREATE DATABASE pgbench'
base="postgresql://postgres@127.0.0.1:$PG_PORT"

export DATABASE_URL="$base/litterbox_bench"
export SERVICE_TOKENS
SERVICE_TOKENS="$(lb_random_hex 16)"
export LITTERBOX_STATE_DIR="$work/state"
# Per-request info logs would measure the terminal, not the server.
export LITTERBOX_LOG_LEVEL="${LITTERBOX_LOG_LEVEL:-warn}"
# Every POST keeps a host (and its SSH port) for the whole run: leave room for all of them.
export LITTERBOX_SSH_PORTS="${LITTERBOX_SSH_PORTS:-10000-65000}"
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

id="$(curl -fsS -X POST -H "$auth" -H 'Content-Type: application/json' -d '{}' "$url/hosts" |
  jq -r .id)"
[[ "$id" =~ ^[0-9a-f-]{36}$ ]] || lb_die "creating the benchmark host failed"
curl -fsS -o /dev/null -H "$auth" "$url/hosts/$id" || lb_die "GET /hosts/$id failed"

# to_ms VALUE_WITH_UNIT: wrk prints latencies as 812.00us, 1.23ms or 1.01s.
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.2f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.2f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.2f", v * 1000 }
    else print "?" }'
}
wrk_rps() { awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$1"; }
wrk_p99() { to_ms "$(awk '$1 == "99%" { print $2 }' "$1")"; }
wrk_errors() {
  awk '/Non-2xx or 3xx responses:/ { n += $NF } /Socket errors:/ {
    for (i = 4; i <= NF; i += 2) n += $(i) } END { print n + 0 }' "$1" | tr -d ','
}

load_before="$(cut -d' ' -f1 /proc/loadavg)"
lb_log "wrk GET /hosts/{id}: ${duration}s, $connections connections"
wrk -t2 -c"$connections" -d"${duration}s" --timeout 10s --latency -H "$auth" "$url/hosts/$id" \
  >"$work/get.txt"
lb_log "wrk POST /hosts: ${duration}s, $connections connections"
BENCH_TOKEN="$SERVICE_TOKENS" wrk -t2 -c"$connections" -d"${duration}s" --timeout 10s --latency \
  -s "$LB_ROOT/bench/http/post_hosts.lua" "$url/hosts" >"$work/post.txt"

# The server is idle from here on but stays up: pgbench gets the same machine state.
lb_log "pgbench -S: ${duration}s, $connections clients"
pgbench -i -q -h 127.0.0.1 -p "$PG_PORT" -U postgres pgbench >"$work/pgbench-init.txt" 2>&1 ||
  lb_die "pgbench -i failed: $(tail -n 5 "$work/pgbench-init.txt")"
(cd "$work" && pgbench -S -c"$connections" -j2 -T"$duration" -l --log-prefix=pgbench-log \
  -h 127.0.0.1 -p "$PG_PORT" -U postgres pgbench >"$work/pgbench-out.txt" 2>&1)
pg_tps="$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' \
  "$work/pgbench-out.txt" | awk '{ printf "%.0f", $1 }')"
# Per-transaction log: the third field is the latency in microseconds.
pg_p99="$(cat "$work"/pgbench-log.* 2>/dev/null | awk '{ print $3 }' | sort -n |
  awk '{ a[NR] = $1 } END { if (NR) printf "%.2f", a[int(NR * 0.99 + 0.5)] / 1000; else print "?" }')"

get_rps="$(wrk_rps "$work/get.txt")"
get_p99="$(wrk_p99 "$work/get.txt")"
post_rps="$(wrk_rps "$work/post.txt")"
post_p99="$(wrk_p99 "$work/post.txt")"
ratio="$(awk -v a="$get_rps" -v b="$pg_tps" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }')"
verdict_ratio="$(awk -v r="$ratio" 'BEGIN { print (r + 0 >= 0.5) ? "met" : "MISSED" }')"
verdict_p99="$(awk -v p="$get_p99" 'BEGIN { print (p + 0 < 10) ? "met" : "MISSED" }')"

cat <<TABLE

litterbox HTTP benchmark — $(nproc) cores, load average before $load_before, ${duration}s each, $connections connections, wrk -t2 / pgbench -j2
| benchmark | req/s | p99 latency | errors |
|---|---:|---:|---:|
| GET /hosts/{id} | $get_rps | $get_p99 ms | $(wrk_errors "$work/get.txt") |
| POST /hosts (fake hypervisor) | $post_rps | $post_p99 ms | $(wrk_errors "$work/post.txt") |
| pgbench -S (same cluster) | $pg_tps | $pg_p99 ms | — |

GET/pgbench TPS ratio: $ratio (target >= 0.5: $verdict_ratio); GET p99 $get_p99 ms (target < 10 ms: $verdict_p99)
POST /hosts responses by status: $(sed -n 's/^Statuses: //p' "$work/post.txt")
load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)
TABLE
if [[ -n "${BENCH_KEEP:-}" ]]; then
  mkdir -p "$BENCH_KEEP"
  cp "$work"/get.txt "$work"/post.txt "$work"/pgbench-out.txt "$work"/server.log "$BENCH_KEEP"/
  lb_log "raw outputs kept in $BENCH_KEEP"
fi
