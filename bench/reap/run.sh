#!/usr/bin/env bash
# Reap benchmark: one `reap` pass over N expired hosts (default 10 000) with the fake
# hypervisor against a throw-away PostgreSQL cluster. Target: <= 10 s for 10 000 hosts.
#
#   bench/reap/run.sh [--no-build] [--hosts N]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"

build=1
hosts=10000
while (($#)); do
  case "$1" in
    --no-build) build=0; shift ;;
    --hosts) hosts="$2"; shift 2 ;;
    -h | --help) sed -n '2,5p' "$0"; exit 0 ;;
    *) lb_die "unknown argument $1 (see --help)" ;;
  esac
done
((EUID == 0)) || lb_die "run as root (the cluster runs as the postgres user)"
if ((build)); then
  "$LB_ROOT/scripts/build" reap_bench
fi
bin="$(lb_build_dir)/bench/reap/reap_bench"
[[ -x "$bin" ]] || lb_die "$bin not found; run scripts/build reap_bench"

source "$LB_ROOT/bench/lib/pg.sh"
bench_pg_database reap_bench
"$bin" "$BENCH_PG_URL" "$hosts"
