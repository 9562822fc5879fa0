# shellcheck shell=bash
# Starts the libvirt daemons on a machine without systemd. Source this file, then call
# libvirt_start; it is idempotent and safe to call from several scripts.

# libvirt_socket: the system daemon's read-write socket.
libvirt_socket() {
  printf '%s\n' "${LIBVIRT_SOCKET:-/run/libvirt/libvirt-sock}"
}

# libvirt_running NAME: true if a process with exactly that command name is running.
libvirt_running() {
  pgrep -x "$1" >/dev/null 2>&1
}

# libvirt_start: starts virtlogd and libvirtd unless running, then waits (up to
# LIBVIRT_START_TIMEOUT seconds, default 30) until libvirtd answers on its socket.
libvirt_start() {
  local timeout="${LIBVIRT_START_TIMEOUT:-30}"
  local sock
  sock="$(libvirt_socket)"
  mkdir -p /run/libvirt
  # Two callers may race here; the loser's daemon exits on the pid-file lock, which is fine:
  # what counts is that one answers on the socket below.
  if ! libvirt_running virtlogd; then
    virtlogd -d || true
  fi
  if ! libvirt_running libvirtd; then
    libvirtd -d || true
  fi
  local deadline=$((SECONDS + timeout))
  until [ -S "$sock" ] && virsh -q -c qemu:///system version >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "libvirt_start: libvirtd did not answer on $sock within ${timeout}s" >&2
      return 1
    fi
    sleep 0.2
  done
}
