# shellcheck shell=bash
# Shared helpers for the scripts in scripts/: logging, paths, the state dir, building.
# Sourced, never run. Callers set `set -euo pipefail` themselves.

LB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export LB_ROOT

# Where everything that must survive a restart lives: the embedded PostgreSQL cluster, the
# service token, image cache, disks. Not under /root: libvirt-qemu must traverse it.
LITTERBOX_STATE_DIR="${LITTERBOX_STATE_DIR:-/var/lib/litterbox}"
export LITTERBOX_STATE_DIR

lb_prog="$(basename "$0")"

lb_log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "$lb_prog" "$*" >&2; }
lb_warn() { lb_log "warning: $*"; }
lb_die() {
  lb_log "error: $*"
  exit 1
}

# lb_have_function NAME: true when a shell function NAME is defined.
lb_have_function() { declare -F "$1" >/dev/null 2>&1; }

# lb_source_optional FILE: sources scripts/lib/FILE when it exists; false otherwise.
lb_source_optional() {
  local f="$LB_ROOT/scripts/lib/$1"
  if [[ -f "$f" ]]; then
    # shellcheck disable=SC1090
    source "$f"
    return 0
  fi
  return 1
}

# lb_port_in_use PORT: true when something listens on 127.0.0.1:PORT (or on all addresses).
lb_port_in_use() {
  [[ -n "$(ss -Hltn "( sport = :$1 )" 2>/dev/null)" ]]
}

# lb_free_port: prints a loopback TCP port nobody listens on right now. Callers that bind it
# later must retry on a collision. Drawn from 23000-31999: above litterboxd's default SSH
# forward range (22000-22999) and below the kernel's ephemeral range.
lb_free_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((23000 + RANDOM % 9000))
    if ! lb_port_in_use "$p"; then
      echo "$p"
      return 0
    fi
  done
  lb_die "no free loopback port found"
}

# lb_build_dir: the build tree scripts/up and bench use (the `release` preset's binaryDir).
lb_build_dir() { echo "${LB_BUILD_DIR:-$LB_ROOT/build/release}"; }

# lb_build BUILD_DIR BUILD_TYPE [TARGET...]: configures BUILD_DIR once (Ninja, ccache through
# cmake/Ccache.cmake) and builds with -j2; without targets everything is built. Reconfiguring
# is left to Ninja, which re-runs CMake when a CMakeLists.txt changed, so a no-op rebuild
# costs well under a second. LB_WERROR=ON|OFF (default ON) sets LB_WARNINGS_AS_ERRORS; a tree
# configured the other way is reconfigured once.
lb_build() {
  local dir="$1" type="$2"
  shift 2
  local jobs="${LB_JOBS:-2}" werror="${LB_WERROR:-ON}"
  if [[ ! -f "$dir/build.ninja" ]] ||
    ! grep -qx "LB_WARNINGS_AS_ERRORS:BOOL=$werror" "$dir/CMakeCache.txt" 2>/dev/null; then
    lb_log "configuring $dir ($type, warnings as errors $werror)"
    # LB_BUILD_TESTS is passed explicitly: cmake/Dependencies.cmake reads it before the
    # top-level option() defines it, so a fresh tree would otherwise skip find_package(GTest).
    cmake -S "$LB_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" \
      -DCMAKE_EXPORT_COMPILE_COMMANDS=ON -DLB_WARNINGS_AS_ERRORS="$werror" -DLB_BUILD_TESTS=ON \
      >&2 || return 1
  fi
  local targets=()
  if (($# > 0)); then
    targets=(--target "$@")
  fi
  lb_log "building $dir ${*:-(all)}"
  cmake --build "$dir" -j "$jobs" "${targets[@]}" >&2 || return 1
}

# lb_litterboxd BUILD_DIR: prints the path of the litterboxd binary in BUILD_DIR.
lb_litterboxd() { echo "$1/controlplane/litterboxd/litterboxd"; }

# lb_has_target BUILD_DIR TARGET: true when the configured tree defines TARGET.
lb_has_target() {
  cmake --build "$1" --target help 2>/dev/null | grep -q "^$2:"
}

# lb_wait_for_file PATH TIMEOUT_S PID: waits until PATH is non-empty, failing early when
# process PID exits. A start-up wait in a script, not a timing assertion.
lb_wait_for_file() {
  local path="$1" timeout="$2" pid="$3" i
  for ((i = 0; i < timeout * 10; i++)); do
    [[ -s "$path" ]] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# lb_random_hex N: N random bytes as lowercase hex.
lb_random_hex() { od -An -vtx1 -N"$1" /dev/urandom | tr -d ' \n'; }
