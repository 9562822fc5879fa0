# shellcheck shell=bash
# The loopback OCI registry that serves the reference image (Debian's docker-registry).
# Source this file, then call registry_start / registry_stop.
#   LITTERBOX_STATE_DIR      state directory (default /var/lib/litterbox); data in ./registry
#   LITTERBOX_REGISTRY_ADDR  listen address (default 127.0.0.1:5000; loopback only)

registry_dir() {
  echo "${LITTERBOX_STATE_DIR:-/var/lib/litterbox}/registry"
}

registry_addr() {
  echo "${LITTERBOX_REGISTRY_ADDR:-127.0.0.1:5000}"
}

# True when the registry started from this state directory is alive.
registry_running() {
  local pidfile
  pidfile="$(registry_dir)/registry.pid"
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

registry_start() {
  local dir addr i
  dir=$(registry_dir)
  addr=$(registry_addr)
  case "$addr" in
    127.*:*) ;;
    *) echo "registry: refusing to listen on $addr (loopback only)" >&2; return 1 ;;
  esac
  if registry_running; then
    return 0
  fi
  mkdir -p "$dir/data"
  # Only what a loopback test registry needs: filesystem storage, deletes allowed (so
  # tests can drop tags), no auth, no TLS, no notifications.
  cat >"$dir/config.yml" <<CONFIG
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $addr
  headers:
    X-Content-Type-Options: [nosniff]
CONFIG
  docker-registry serve "$dir/config.yml" >>"$dir/registry.log" 2>&1 </dev/null &
  echo $! >"$dir/registry.pid"
  for i in $(seq 1 100); do
    if curl -fs -o /dev/null "http://$addr/v2/"; then
      return 0
    fi
    if ! registry_running; then
      break
    fi
    sleep 0.1
  done
  echo "registry: did not come up on $addr; see $dir/registry.log" >&2
  registry_stop
  return 1
}

registry_stop() {
  local pidfile pid i
  pidfile="$(registry_dir)/registry.pid"
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}
