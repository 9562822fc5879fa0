#!/usr/bin/env bash
# Placement benchmark: concurrent host inserts (the create's one transaction: quota, node
# lock and capacity, port lease) against a throw-away PostgreSQL cluster, placed on one
# fixed node, chosen among 1 node, and chosen among 2 nodes, side by side in each round.
#
#   bench/placement/run.sh [--no-build] [--hosts N] [--threads T] [--rounds R]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"

build=1
hosts=2000
threads=8
rounds=3
while (($#)); do
  case "$1" in
    --no-build) build=0; shift ;;
    --hosts) hosts="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    -h | --help) sed -n '2,6p' "$0"; exit 0 ;;
    *) lb_die "unknown argument $1 (see --help)" ;;
  esac
done
((EUID == 0)) || lb_die "run as root (the cluster runs as the postgres user)"
if ((build)); then
  "$LB_ROOT/scripts/build" placement_bench
fi
bin="$(lb_build_dir)/bench/placement/placement_bench"
[[ -x "$bin" ]] || lb_die "$bin not found; run scripts/build placement_bench"

source "$LB_ROOT/bench/lib/pg.sh"
bench_pg_database placement_bench
"$bin" "$BENCH_PG_URL" "$hosts" "$threads" "$rounds"
