#!/usr/bin/env bash
# Templates and clones on the libvirt driver (TCG): template build, state file size, N
# sequential clones restore → ready (p50/p99 with spread), apply_login, memory and disk per
# live clone, one cold boot of the same spec. One run, as root; prints a Markdown table.
#
#   bench/clone/run.sh [--no-build] [--clones N] [--live K] [--no-cold]
#
# LB_BUILD_DIR picks the build tree (default build/release). The guest is the libvirt e2e
# base disk (tests/e2e/libvirt/make-base-disk.sh, cached under /var/tmp/litterbox-e2e) with
# the host's kernel and the small initrd built next to it.
# --no-cold skips the cold boot (SPDLOG_LEVEL=trace times every guest-agent command).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"

build=1
clones=20
live=4
cold=1
while (($#)); do
  case "$1" in
    --no-build) build=0; shift ;;
    --clones) clones="$2"; shift 2 ;;
    --live) live="$2"; shift 2 ;;
    --no-cold) cold=0; shift ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) lb_die "unknown argument $1 (see --help)" ;;
  esac
done
[[ "$clones" =~ ^[1-9][0-9]*$ && "$live" =~ ^[0-9]+$ ]] || lb_die "--clones/--live take numbers"
((EUID == 0)) || lb_die "run as root (libvirtd and qemu need it)"
dir="${LB_BUILD_DIR:-$LB_ROOT/build/release}"
if ((build)); then
  "$LB_ROOT/scripts/build" --build-dir "$dir" clone_bench >&2
fi
bin="$dir/bench/clone/clone_bench"
[[ -x "$bin" ]] || lb_die "$bin not found; run scripts/build clone_bench"

source "$LB_ROOT/scripts/lib/libvirt.sh"
libvirt_start

# The same base disk and initrd as the libvirt e2e tests, keyed by their recipe.
recipe="$LB_ROOT/tests/e2e/libvirt"
key="$(cat "$recipe/make-base-disk.sh" "$LB_ROOT/cloud-init/images/files/qemu-ga.conf" |
  sha256sum | cut -c1-12)"
cache="/var/tmp/litterbox-e2e/base-$key"
if [[ ! -f "$cache/base.qcow2" || ! -f "$cache/initrd.img" ]]; then
  lb_log "building the e2e base disk into $cache"
  bash "$recipe/make-base-disk.sh" "$cache" >&2
fi
kernel="$(ls -1 /boot/vmlinuz-* | sort -V | tail -n 1)"

work="$(mktemp -d /var/tmp/litterbox-clonebench.XXXXXX)"
chmod 0755 "$work"
trap 'rm -rf "$work"' EXIT
lb_log "load before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin" "$work" "$cache/base.qcow2" "$kernel" "$cache/initrd.img" "$clones" "$live" "$cold"
lb_log "load after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
