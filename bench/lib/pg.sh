# shellcheck shell=bash
# A throw-away PostgreSQL cluster for a benchmark binary that needs only a database.
#
#   source bench/lib/pg.sh; bench_pg_database <name>
#
# starts a cluster in a temporary directory on a free loopback port (trust auth), creates
# database <name>, removes everything when the script exits, and sets BENCH_PG_URL. Callers
# source scripts/lib/common.sh first.

bench_pg_database() {
  local db="$1"
  bench_pg_work="$(mktemp -d /tmp/litterbox-bench-pg.XXXXXX)"
  chmod 0755 "$bench_pg_work"
  export PG_DIR="$bench_pg_work/pg" PG_AUTH=trust
  # shellcheck source=../../scripts/lib/pg.sh
  source "$LB_ROOT/scripts/lib/pg.sh"
  trap 'pg_stop >/dev/null 2>&1 || true; rm -rf "$bench_pg_work"' EXIT
  PG_PORT="$(lb_free_port)"
  pg_start >/dev/null
  pg_psql -c "CREATE DATABASE $db" >/dev/null
  # shellcheck disable=SC2034  # for the caller
  BENCH_PG_URL="postgresql://postgres@127.0.0.1:$PG_PORT/$db"
}
