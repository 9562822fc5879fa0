# shellcheck shell=bash
# Set-up shared by the benchmarks that run real guests through litterboxd (bench/boot,
# bench/fast): a private libvirtd, the loopback registry with the reference image, the guest
# kernel, a throw-away PostgreSQL cluster, litterboxd serve with the libvirt driver, a bare
# qemu boot of the same image, and the cleanup of all of it. Sourced after
# scripts/lib/common.sh by a script that runs `set -euo pipefail`.
#
# The caller sets, before bench_enter_namespace:
#   bench_name       short name: database, tmpfs, cgroup and qemu names (e.g. bootbench)
#   bench_root       work root; the reference image and guest initrd are cached under it
#   bench_ssh_ports  SSH forward range of litterboxd (e.g. 24000-24099)
#   keep             empty, or a directory that receives the raw outputs on exit
# and may append to bench_keep_files (paths under $work copied to $keep).
#
# Afterwards these are set: bin, work, cache, state, url, auth, api_port, server, image, and
# LITTERBOX_KERNEL/LITTERBOX_INITRD; hosts_made and domain_names collect what cleanup deletes.

bench_keep_files=(litterboxd.log raw)

# bench_enter_namespace BUILD ARGS...: builds litterboxd (BUILD=1), then re-runs the calling
# script with ARGS inside a private mount namespace. Returns only inside it.
#
# Every litterboxd sweeps away libvirt domains tagged with its owner tag that its own
# database does not know, and the tag is the same for every litterboxd. So that a run
# neither destroys the guests of another litterboxd on the machine nor loses its own to
# theirs, it talks to a libvirtd of its own, started in a private mount namespace over
# empty /run/libvirt, /var/lib/libvirt and /var/cache/libvirt.
bench_enter_namespace() {
  local build="$1"
  shift
  [[ -n "${LB_BENCH_IN_NAMESPACE:-}" ]] && return 0
  if ((build)); then
    if [[ -n "${LB_BUILD_DIR:-}" ]]; then
      "$LB_ROOT/scripts/build" --build-dir "$LB_BUILD_DIR" litterboxd
    else
      "$LB_ROOT/scripts/build" litterboxd
    fi
  fi
  export LB_BENCH_IN_NAMESPACE=1
  exec unshare --mount --propagation private "$0" "$@" --no-build
}

# bench_require_tools TOOL...: dies naming the first tool that is missing.
bench_require_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || lb_die "$tool missing: run scripts/install-deps"
  done
}

# bench_prepare_dirs: the work directory (removed on exit unless kept) and the libraries.
bench_prepare_dirs() {
  export LC_ALL=C # byte counts for HTTP bodies
  bin="$(lb_litterboxd "$(lb_build_dir)")"
  [[ -x "$bin" ]] || lb_die "$bin not found; run scripts/build litterboxd"
  cache="$bench_root/cache"
  mkdir -p "$cache"
  chmod 0755 "$bench_root" "$cache" # QEMU runs as libvirt-qemu and must reach the disks
  work="$(mktemp -d "$bench_root/run.XXXXXX")"
  chmod 0755 "$work"
  state="$work/state"
  mkdir -p "$state" "$work/bare" "$work/raw"
  chmod 0755 "$state" "$work/bare"
  # shellcheck source=../../scripts/lib/registry.sh
  source "$LB_ROOT/scripts/lib/registry.sh"
  # shellcheck source=../../scripts/lib/reference-image.sh
  source "$LB_ROOT/scripts/lib/reference-image.sh"
  # shellcheck source=../../scripts/lib/guest-kernel.sh
  source "$LB_ROOT/scripts/lib/guest-kernel.sh"
  export PG_DIR="$work/pg" PG_AUTH=trust
  # shellcheck source=../../scripts/lib/pg.sh
  source "$LB_ROOT/scripts/lib/pg.sh"
}

server=""
url=""
auth=""
bare_pid=""
bare_cgroup=""
hosts_made=()
domain_names=()

# bench_cleanup: the EXIT trap. Stops the bare qemu, deletes every host made through the
# API, stops litterboxd, removes whatever the private libvirtd still runs, stops the daemons,
# the registry and the cluster, keeps the raw outputs when asked and removes the work dir.
bench_cleanup() {
  set +e
  if [[ -n "$bare_pid" ]]; then
    kill -TERM "$bare_pid" 2>/dev/null
    wait "$bare_pid" 2>/dev/null
  fi
  [[ -n "$bare_cgroup" && -d "$bare_cgroup" ]] && rmdir "$bare_cgroup" 2>/dev/null
  if [[ -n "$server" ]] && kill -0 "$server" 2>/dev/null; then
    for id in "${hosts_made[@]}"; do
      curl -sS -o /dev/null --max-time 120 -X DELETE -H "$auth" "$url/hosts/$id" 2>/dev/null
    done
    kill -TERM "$server" 2>/dev/null
    wait "$server" 2>/dev/null
  fi
  # Only this run's daemon answers here: whatever it still runs is ours.
  if [[ -S /run/libvirt/libvirt-sock ]]; then
    for dom in $(virsh -q -c qemu:///system list --all --name 2>/dev/null); do
      domain_names+=("$dom")
      virsh -q -c qemu:///system destroy "$dom" >/dev/null 2>&1
      virsh -q -c qemu:///system undefine "$dom" >/dev/null 2>&1
    done
  fi
  for pidfile in "$work/libvirtd.pid" "$work/virtlogd.pid"; do
    [[ -s "$pidfile" ]] && kill -TERM "$(cat "$pidfile")" 2>/dev/null
  done
  # Template guests were saved, not left running: their names are in their info files.
  for info in "$state"/templates/*/info; do
    [[ -f "$info" ]] && domain_names+=("$(sed -n 's/^name=//p' "$info")")
  done
  for name in "${domain_names[@]}"; do
    rm -f "/var/log/libvirt/qemu/$name.log"
  done
  LITTERBOX_STATE_DIR="$cache" registry_stop
  pg_stop >/dev/null 2>&1
  if [[ -n "$keep" ]]; then
    mkdir -p "$keep"
    for f in "${bench_keep_files[@]}"; do
      cp -r "$work/$f" "$keep/" 2>/dev/null
    done
  fi
  rm -rf "$work"
}

# bench_install_traps: cleanup on exit and on INT/TERM.
bench_install_traps() {
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap '' PIPE # a closed keep-alive connection is a failed write, not the end of the script
}

# bench_start_libvirtd: a libvirtd and virtlogd of this run's own, on empty tmpfs.
bench_start_libvirtd() {
  local dir i
  for dir in /run/libvirt /var/lib/libvirt /var/cache/libvirt; do
    mkdir -p "$dir"
    mount -t tmpfs -o mode=0755 "$bench_name-libvirt" "$dir"
  done
  mkdir -p /var/lib/libvirt/qemu /var/cache/libvirt/qemu
  virtlogd -d -p "$work/virtlogd.pid"
  libvirtd -d -p "$work/libvirtd.pid"
  for ((i = 0; i < 150; i++)); do
    virsh -q -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.2
  done
  virsh -q -c qemu:///system version >/dev/null 2>&1 || lb_die "the private libvirtd did not start"
}

# port_outside_ssh_range: a free port that no guest forward will want.
port_outside_ssh_range() {
  local p
  while :; do
    p="$(lb_free_port)"
    ((p < ${bench_ssh_ports%-*} || p > ${bench_ssh_ports#*-})) && break
  done
  echo "$p"
}

# bench_prepare_image: the loopback registry with the reference image (built once into the
# cache), the guest kernel and small initrd; sets image and exports LITTERBOX_STATE_DIR=$state.
bench_prepare_image() {
  LITTERBOX_REGISTRY_ADDR="127.0.0.1:$(port_outside_ssh_range)"
  export LITTERBOX_REGISTRY_ADDR
  LITTERBOX_STATE_DIR="$cache" registry_start
  image="$(LITTERBOX_STATE_DIR="$cache" reference_image_ensure)"
  LITTERBOX_STATE_DIR="$cache"
  guest_kernel_ensure
  export LITTERBOX_STATE_DIR="$state"
}

# bench_start_pg: the throw-away cluster on a free port with the database $bench_name;
# exports DATABASE_URL.
bench_start_pg() {
  local started=0
  for _ in 1 2 3 4 5; do
    PG_PORT="$(lb_free_port)"
    if pg_start >/dev/null; then
      started=1
      break
    fi
  done
  ((started)) || lb_die "could not start the benchmark PostgreSQL cluster"
  pg_psql -d postgres -c "CREATE DATABASE $bench_name" >/dev/null
  export DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/$bench_name"
}

# bench_server_env: the environment every litterboxd of the run serves with.
bench_server_env() {
  SERVICE_TOKENS="$(lb_random_hex 16)"
  export SERVICE_TOKENS LITTERBOX_DEFAULT_IMAGE="$image"
  export LITTERBOX_INSECURE_REGISTRIES="$LITTERBOX_REGISTRY_ADDR" LITTERBOX_SSH_HOST=127.0.0.1
  export LITTERBOX_SSH_PORTS="$bench_ssh_ports" LITTERBOX_ACCEL=tcg PROVISION_TIMEOUT=1800
  export LITTERBOX_LOG_LEVEL=info LITTERBOX_LOG_FORMAT=json
  auth="Authorization: Bearer $SERVICE_TOKENS"
}

# bench_start_server [FLAG...]: litterboxd serve on a free loopback port with FLAGs, its log
# appended to $work/litterboxd.log; sets server, api_port and url.
bench_start_server() {
  rm -f "$work/port"
  "$bin" serve --listen 127.0.0.1:0 --port-file "$work/port" "$@" >>"$work/litterboxd.log" 2>&1 &
  server=$!
  if ! lb_wait_for_file "$work/port" 60 "$server"; then
    tail -n 30 "$work/litterboxd.log" >&2
    lb_die "litterboxd did not start"
  fi
  api_port="$(tr -d '[:space:]' <"$work/port")"
  url="http://127.0.0.1:$api_port"
}

# bench_stop_server: SIGTERM to litterboxd and waits for it to exit.
bench_stop_server() {
  [[ -n "$server" ]] || return 0
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server=""
}

# delete_host ID: a blocking DELETE; warns unless it answers 204.
delete_host() {
  local code
  code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 300 -X DELETE -H "$auth" \
    "$url/hosts/$1")"
  [[ "$code" == 204 ]] || lb_warn "DELETE /hosts/$1 → $code"
}

# --- helpers: no process is started inside polling loops ---------------------------------------
# bench_timers: a FIFO to nap on without forking sleep.
bench_timers() {
  mkfifo "$work/nap"
  exec {nap_fd}<>"$work/nap"
}
nap() { read -r -t "$1" -u "$nap_fd" _ || true; }
now_us() { echo "${EPOCHREALTIME/./}"; } # outside loops only: $(...) forks
secs() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "") print "—"; else printf "%.2f\n", (b - a) / 1e6 }'; }

# http_open: a keep-alive connection to litterboxd for http_get (again after a restart).
http_fd=""
http_open() {
  [[ -n "$http_fd" ]] && exec {http_fd}>&-
  exec {http_fd}<>"/dev/tcp/127.0.0.1/$api_port"
}
# http_get PATH: one GET on the keep-alive connection; sets http_code and http_body.
http_get() {
  local line len=0
  http_code="" http_body=""
  { printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n' "$1" \
    "$SERVICE_TOKENS" >&"$http_fd"; } 2>/dev/null || return 1
  IFS= read -r -t 10 -u "$http_fd" line || return 1
  line="${line%$'\r'}"
  http_code="${line#* }"
  http_code="${http_code%% *}"
  while IFS= read -r -t 10 -u "$http_fd" line; do
    line="${line%$'\r'}"
    [[ -z "$line" ]] && break
    if [[ "${line,,}" == content-length:* ]]; then
      len="${line#*:}"
      len="${len// /}"
    fi
  done
  ((len > 0)) || return 1
  IFS= read -r -N "$len" -t 10 -u "$http_fd" http_body || return 1
}

# qemu_cpu_s PID: CPU seconds (user + system, all threads) the process has used so far.
clk_tck="$(getconf CLK_TCK)"
qemu_cpu_s() {
  local -a f
  local stat
  [[ -r "/proc/$1/stat" ]] || {
    echo ""
    return 0
  }
  read -r stat <"/proc/$1/stat"
  stat="${stat##*")"}"
  read -r -a f <<<"$stat"
  # after "pid (comm)": state is f[0], utime f[11], stime f[12]
  awk -v u="${f[11]}" -v s="${f[12]}" -v t="$clk_tck" 'BEGIN { printf "%.1f", (u + s) / t }'
}

# console_ready FD: reads what the guest wrote since the last call; true once the ready line
# ("litterbox-ready <token> done") was seen. A line cut at end of file is kept for next time.
declare -A console_rest=()
console_ready() {
  local fd="$1" line
  while IFS= read -r -u "$fd" line; do
    line="${console_rest[$fd]:-}$line"
    console_rest[$fd]=""
    [[ "$line" =~ litterbox-ready\ [A-Za-z0-9]+\ done ]] && return 0
  done
  console_rest[$fd]+="$line"
  return 1
}

# --- the bare qemu boot ----------------------------------------------------------------------
# bench_bare_source HOST_ID DOMAIN_NAME: takes what the bare boot reuses from a host booted
# through the API, while it runs: its seed, its overlay's virtual size and base, its size, and
# the kernel command line libvirt kept. Sets base_disk, disk_virtual, cpus, memory, cmdline.
bench_bare_source() {
  local dir="$state/vms/$1"
  cp "$dir/seed.iso" "$work/bare/seed.iso"
  disk_virtual="$(qemu-img info -U --output=json "$dir/disk.qcow2" | jq -r '."virtual-size"')"
  base_disk="$(qemu-img info -U --output=json "$dir/disk.qcow2" | jq -r '."full-backing-filename"')"
  curl -fsS -H "$auth" "$url/hosts/$1" >"$work/raw/bare-source-host.json"
  cpus="$(jq -r .cpus "$work/raw/bare-source-host.json")"
  memory="$(jq -r .memory_mib "$work/raw/bare-source-host.json")"
  virsh -q -c qemu:///system dumpxml "$2" >"$work/raw/bare-source-domain.xml"
  cmdline="$(sed -n 's|.*<cmdline>\(.*\)</cmdline>.*|\1|p' "$work/raw/bare-source-domain.xml" | head -n 1)"
  [[ -n "$cmdline" ]] || lb_die "no <cmdline> in the domain XML of $2"
}

# bench_machine_cgroup: a cpu cgroup of this run's own under `machine`, where libvirt puts
# every guest (cgroup v1: all guests together weigh as much as one process, cpu.shares 1024);
# sets bare_cgroup (empty, with a warning, when there is none).
bench_machine_cgroup() {
  local parent
  bare_cgroup=""
  for parent in /sys/fs/cgroup/cpu/machine /sys/fs/cgroup/machine; do
    if [[ -d "$parent" && -w "$parent" ]]; then
      bare_cgroup="$parent/$bench_name-$(basename "$work")"
      return 0
    fi
  done
  lb_warn "no machine cpu cgroup: the bare boot runs where this script runs"
}

# bare_boot LABEL INITRD [CGROUP]: boots a fresh overlay on base_disk with the seed taken by
# bench_bare_source; sets bare_ready_s (start → ready line), bare_ssh_s (start → SSH banner on
# the forward) and bare_cpu (qemu CPU seconds to the ready line). CGROUP is created and
# removed around the boot.
bare_boot() {
  local label="$1" initrd="$2" cgroup="${3:-}" port t0 t_ready="" t_ssh="" cfd line sfd
  local disk="$work/bare/$label.qcow2" console="$work/bare/$label-console.log"
  rm -f "$disk" "$console"
  qemu-img create -q -f qcow2 -F qcow2 -b "$base_disk" "$disk" "$disk_virtual"
  port="$(port_outside_ssh_range)"
  : >"$console"
  # shellcheck disable=SC2054  # the commas belong to qemu's option syntax
  local cmd=(qemu-system-x86_64 -name "$bench_name-$label" -machine pc,accel=tcg -cpu max
    -smp "$cpus" -m "$memory" -nodefaults -no-user-config -display none -no-reboot
    -rtc base=utc -kernel "$LITTERBOX_KERNEL" -initrd "$initrd"
    -append "$cmdline"
    -drive "file=$disk,if=none,id=vda,format=qcow2,cache=unsafe,discard=unmap"
    -device virtio-blk-pci,drive=vda
    -drive "file=$work/bare/seed.iso,if=none,id=vdb,format=raw,readonly=on"
    -device virtio-blk-pci,drive=vdb
    -serial "file:$console"
    -object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0
    -netdev "user,id=lbnet0,ipv6=off,hostfwd=tcp:127.0.0.1:$port-:22"
    -device virtio-net-pci,netdev=lbnet0)
  printf '%q ' "${cmd[@]}" >"$work/raw/bare-$label-cmdline.txt"
  [[ -n "$cgroup" ]] && mkdir -p "$cgroup"
  t0="$(now_us)"
  "${cmd[@]}" >"$work/raw/bare-$label-qemu.log" 2>&1 &
  bare_pid=$!
  if [[ -n "$cgroup" ]]; then
    echo "$bare_pid" >"$cgroup/cgroup.procs"
  fi
  exec {cfd}<"$console"
  while kill -0 "$bare_pid" 2>/dev/null; do
    if console_ready "$cfd"; then
      t_ready="${EPOCHREALTIME/./}"
      bare_cpu="$(qemu_cpu_s "$bare_pid")"
      break
    fi
    nap 0.02
  done
  exec {cfd}<&-
  [[ -n "$t_ready" ]] || lb_die "bare $label boot: qemu exited before the ready line"
  # The SSH banner through the forward: what the API's probe waits for first.
  while kill -0 "$bare_pid" 2>/dev/null && ((${EPOCHREALTIME/./} - t_ready < 60000000)); do
    # The braces keep the 2>/dev/null off the shell itself: exec would make it stick.
    if { exec {sfd}<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
      if IFS= read -r -t 5 -u "$sfd" line && [[ "$line" == SSH-* ]]; then
        t_ssh="${EPOCHREALTIME/./}"
      fi
      exec {sfd}>&-
      [[ -n "$t_ssh" ]] && break
    fi
    nap 0.02
  done
  kill -TERM "$bare_pid" 2>/dev/null || true
  wait "$bare_pid" 2>/dev/null || true
  bare_pid=""
  if [[ -n "$cgroup" ]]; then
    rmdir "$cgroup" 2>/dev/null || true
  fi
  cp "$console" "$work/raw/" || true
  bare_ready_s="$(secs "$t0" "$t_ready")"
  bare_ssh_s="$(secs "$t0" "$t_ssh")"
}
