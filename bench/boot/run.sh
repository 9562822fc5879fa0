#!/usr/bin/env bash
# Boot benchmark (TCG): create → active through the API against a bare qemu boot of the same
# disk, kernel, initrd, cmdline and seed. One run, as root; prints Markdown tables.
#
#   bench/boot/run.sh [--no-build] [--concurrent N] [--before] [--keep DIR]
#
#   --concurrent N  concurrent creates in the last step (default 4; 0 skips it)
#   --before        also boots the bare guest with the stock /boot initrd (the "before" row)
#   --keep DIR      copies raw outputs (litterboxd log, consoles, qemu command lines) to DIR
#
# LB_BUILD_DIR picks the build tree (default build/release); BOOTBENCH_DIR the work root
# (default /var/tmp/litterbox-bootbench; the built reference image and guest initrd are
# cached under it); BOOTBENCH_SSH_PORTS the forward range (default 24000-24099).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"

build=1
concurrent=4
before=0
keep=""
args=("$@")
while (($#)); do
  case "$1" in
    --no-build) build=0; shift ;;
    --concurrent) concurrent="$2"; shift 2 ;;
    --before) before=1; shift ;;
    --keep) keep="$2"; shift 2 ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) lb_die "unknown argument $1 (see --help)" ;;
  esac
done
[[ "$concurrent" =~ ^[0-9]+$ ]] || lb_die "--concurrent takes a number"
((EUID == 0)) || lb_die "run as root (libvirtd, the cluster and qemu need it)"
for tool in curl jq qemu-img qemu-system-x86_64 libvirtd virtlogd virsh unshare skopeo; do
  command -v "$tool" >/dev/null || lb_die "$tool missing: run scripts/install-deps"
done

# Every litterboxd sweeps away libvirt domains tagged with its owner tag that its own
# database does not know, and the tag is the same for every litterboxd. So that this run
# neither destroys the guests of another litterboxd on the machine nor loses its own to
# theirs, it talks to a libvirtd of its own, started in a private mount namespace over
# empty /run/libvirt, /var/lib/libvirt and /var/cache/libvirt.
if [[ -z "${BOOTBENCH_IN_NAMESPACE:-}" ]]; then
  if ((build)); then
    if [[ -n "${LB_BUILD_DIR:-}" ]]; then
      "$LB_ROOT/scripts/build" --build-dir "$LB_BUILD_DIR" litterboxd
    else
      "$LB_ROOT/scripts/build" litterboxd
    fi
  fi
  export BOOTBENCH_IN_NAMESPACE=1
  exec unshare --mount --propagation private "$0" "${args[@]}" --no-build
fi

export LC_ALL=C  # byte counts for HTTP bodies
bin="$(lb_litterboxd "$(lb_build_dir)")"
[[ -x "$bin" ]] || lb_die "$bin not found; run scripts/build litterboxd"

root="${BOOTBENCH_DIR:-/var/tmp/litterbox-bootbench}"
cache="$root/cache"
ssh_ports="${BOOTBENCH_SSH_PORTS:-24000-24099}"
mkdir -p "$cache"
chmod 0755 "$root" "$cache"  # QEMU runs as libvirt-qemu and must reach the disks
work="$(mktemp -d "$root/run.XXXXXX")"
chmod 0755 "$work"
state="$work/state"
mkdir -p "$state" "$work/bare"
chmod 0755 "$state" "$work/bare"

source "$LB_ROOT/scripts/lib/registry.sh"
source "$LB_ROOT/scripts/lib/reference-image.sh"
source "$LB_ROOT/scripts/lib/guest-kernel.sh"
export PG_DIR="$work/pg" PG_AUTH=trust
source "$LB_ROOT/scripts/lib/pg.sh"

server=""
url=""
auth=""
bare_pid=""
hosts_made=()
domain_names=()
cleanup() {
  set +e
  if [[ -n "$bare_pid" ]]; then
    kill -TERM "$bare_pid" 2>/dev/null
    wait "$bare_pid" 2>/dev/null
  fi
  [[ -n "${bare_cgroup:-}" && -d "$bare_cgroup" ]] && rmdir "$bare_cgroup" 2>/dev/null
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
      virsh -q -c qemu:///system destroy "$dom" >/dev/null 2>&1
      virsh -q -c qemu:///system undefine "$dom" >/dev/null 2>&1
    done
  fi
  for pidfile in "$work/libvirtd.pid" "$work/virtlogd.pid"; do
    [[ -s "$pidfile" ]] && kill -TERM "$(cat "$pidfile")" 2>/dev/null
  done
  for name in "${domain_names[@]}"; do
    rm -f "/var/log/libvirt/qemu/$name.log"
  done
  LITTERBOX_STATE_DIR="$cache" registry_stop
  pg_stop >/dev/null 2>&1
  if [[ -n "$keep" ]]; then
    mkdir -p "$keep"
    cp -r "$work/litterboxd.log" "$work/raw" "$keep/" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap '' PIPE  # a closed keep-alive connection is a failed write, not the end of the script
mkdir -p "$work/raw"

# --- a libvirtd of our own -------------------------------------------------------------------
for dir in /run/libvirt /var/lib/libvirt /var/cache/libvirt; do
  mkdir -p "$dir"
  mount -t tmpfs -o mode=0755 bootbench-libvirt "$dir"
done
mkdir -p /var/lib/libvirt/qemu /var/cache/libvirt/qemu
virtlogd -d -p "$work/virtlogd.pid"
libvirtd -d -p "$work/libvirtd.pid"
for ((i = 0; i < 150; i++)); do
  virsh -q -c qemu:///system version >/dev/null 2>&1 && break
  sleep 0.2
done
virsh -q -c qemu:///system version >/dev/null 2>&1 || lb_die "the private libvirtd did not start"

# --- image, kernel, database, litterboxd -----------------------------------------------------
# port_outside_ssh_range: a free port that no guest forward will want.
port_outside_ssh_range() {
  local p
  while :; do
    p="$(lb_free_port)"
    ((p < ${ssh_ports%-*} || p > ${ssh_ports#*-})) && break
  done
  echo "$p"
}
LITTERBOX_REGISTRY_ADDR="127.0.0.1:$(port_outside_ssh_range)"
export LITTERBOX_REGISTRY_ADDR
LITTERBOX_STATE_DIR="$cache" registry_start
image="$(LITTERBOX_STATE_DIR="$cache" reference_image_ensure)"
LITTERBOX_STATE_DIR="$cache"
guest_kernel_ensure
export LITTERBOX_STATE_DIR="$state"

started=0
for _ in 1 2 3 4 5; do
  PG_PORT="$(lb_free_port)"
  if pg_start >/dev/null; then
    started=1
    break
  fi
done
((started)) || lb_die "could not start the benchmark PostgreSQL cluster"
pg_psql -d postgres -c 'CREATE DATABASE litterbox_bootbench' >/dev/null

SERVICE_TOKENS="$(lb_random_hex 16)"
export DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/litterbox_bootbench"
export SERVICE_TOKENS LITTERBOX_DEFAULT_IMAGE="$image"
export LITTERBOX_INSECURE_REGISTRIES="$LITTERBOX_REGISTRY_ADDR" LITTERBOX_SSH_HOST=127.0.0.1
export LITTERBOX_SSH_PORTS="$ssh_ports" LITTERBOX_ACCEL=tcg PROVISION_TIMEOUT=1800
export LITTERBOX_LOG_LEVEL=info LITTERBOX_LOG_FORMAT=json
"$bin" serve --listen 127.0.0.1:0 --port-file "$work/port" >"$work/litterboxd.log" 2>&1 &
server=$!
if ! lb_wait_for_file "$work/port" 60 "$server"; then
  tail -n 30 "$work/litterboxd.log" >&2
  lb_die "litterboxd did not start"
fi
api_port="$(tr -d '[:space:]' <"$work/port")"
url="http://127.0.0.1:$api_port"
auth="Authorization: Bearer $SERVICE_TOKENS"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- helpers: no process is started inside the polling loops --------------------------------
mkfifo "$work/nap"
exec {nap_fd}<>"$work/nap"
nap() { read -r -t "$1" -u "$nap_fd" _ || true; }
now_us() { echo "${EPOCHREALTIME/./}"; }  # outside loops only: $(...) forks
secs() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "") print "—"; else printf "%.2f", (b - a) / 1e6 }'; }

# qemu_cpu_s PID: CPU seconds (user + system, all threads) the process has used so far.
clk_tck="$(getconf CLK_TCK)"
qemu_cpu_s() {
  local -a f
  local stat
  [[ -r "/proc/$1/stat" ]] || { echo ""; return 0; }
  read -r stat <"/proc/$1/stat"
  stat="${stat##*")"}"
  read -r -a f <<<"$stat"
  # after "pid (comm)": state is f[0], utime f[11], stime f[12]
  awk -v u="${f[11]}" -v s="${f[12]}" -v t="$clk_tck" 'BEGIN { printf "%.1f", (u + s) / t }'
}

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
# json_status BODY: sets st to the Host's status (empty when there is none).
json_status() {
  st=""
  [[ "$1" =~ \"status\":[[:space:]]*\"([a-z_]+)\" ]] && st="${BASH_REMATCH[1]}"
  return 0
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

# watch_host ID T0: polls GET /hosts/ID every 50 ms until active or error, stamping (in µs)
# the first sight of each status in T[...], of the image store's build steps while pulling
# (its work directory, then rootfs/, rootfs.ext4 and out/ inside it) and of the ready line
# on the guest's console while bootstrapping. Also notes the overlay's size on disk at the
# start of bootstrapping.
declare -A T=()
overlay_bytes=""
ready_cpu=""
watch_host() {
  local id="$1" name="$2" last="" st now console="$state/vms/$1/console.log" cfd="" tries=0
  local -a tmp
  overlay_bytes=""
  ready_cpu=""
  shopt -s nullglob
  http_open
  while :; do
    if ! http_get "/hosts/$id"; then
      ((++tries < 20)) || lb_die "GET /hosts/$id keeps failing"
      http_open
      continue
    fi
    now="${EPOCHREALTIME/./}"
    json_status "$http_body"
    [[ -n "$st" ]] || lb_die "no status in: $http_body"
    if [[ "$st" != "$last" ]]; then
      [[ -z "${T[$st]:-}" ]] && T[$st]="$now"
      last="$st"
    fi
    case "$st" in
      active) break ;;
      error) lb_log "host $id failed: $http_body"; break ;;
      pulling_image)
        tmp=("$state/images"/.tmp-*)
        if ((${#tmp[@]})); then
          [[ -z "${T[work]:-}" ]] && T[work]="$now"
          [[ -z "${T[rootfs]:-}" && -e "${tmp[0]}/rootfs" ]] && T[rootfs]="$now"
          [[ -z "${T[ext4]:-}" && -e "${tmp[0]}/rootfs.ext4" ]] && T[ext4]="$now"
          [[ -z "${T[out]:-}" && -e "${tmp[0]}/out" ]] && T[out]="$now"
        fi
        ;;
      bootstrapping)
        if [[ -z "$overlay_bytes" && -e "$state/vms/$id/disk.qcow2" ]]; then
          overlay_bytes="$(du -B1 "$state/vms/$id/disk.qcow2" | cut -f1)"
        fi
        if [[ -z "$cfd" && -r "$console" ]]; then
          exec {cfd}<"$console"
        fi
        if [[ -z "${T[ready]:-}" && -n "$cfd" ]] && console_ready "$cfd"; then
          T[ready]="$now"
          local qpid=""
          read -r qpid <"/run/libvirt/qemu/$name.pid" || true
          ready_cpu="$(qemu_cpu_s "$qpid")"
        fi
        ;;
    esac
    nap 0.05
  done
  [[ -n "$cfd" ]] && exec {cfd}<&-
  shopt -u nullglob
  [[ "$st" == active ]]
}

# create_async LABEL: POST with Prefer: respond-async, then watch_host; fills P[LABEL.*] with
# the phase durations in seconds.
declare -A P=()
create_async() {
  local label="$1" t0 code id
  T=()
  t0="$(now_us)"
  code="$(curl -sS -o "$work/raw/$label-post.json" -w '%{http_code}' -X POST -H "$auth" \
    -H 'Content-Type: application/json' -H 'Prefer: respond-async' -d '{}' "$url/hosts")"
  [[ "$code" == 202 ]] || lb_die "async POST /hosts → $code: $(cat "$work/raw/$label-post.json")"
  id="$(jq -r .id "$work/raw/$label-post.json")"
  hosts_made+=("$id")
  T[post]="$t0"
  local st
  st="$(jq -r .status "$work/raw/$label-post.json")"
  T[$st]="$(now_us)"
  watch_host "$id" "$(jq -r .name "$work/raw/$label-post.json")" ||
    lb_die "$label create failed; see litterboxd log"
  cp "$state/vms/$id/console.log" "$work/raw/$label-console.log" 2>/dev/null || true
  P[$label.id]="$id"
  P[$label.cpu]="${ready_cpu:-?}"
  P[$label.overlay]="$overlay_bytes"
  # A status never seen between two polls starts where the next one seen starts.
  local b_pull="${T[pulling_image]:-${T[creating_vm]:-${T[bootstrapping]:-${T[active]}}}}"
  local b_create="${T[creating_vm]:-${T[bootstrapping]:-${T[active]}}}"
  local b_boot="${T[bootstrapping]:-${T[active]}}"
  local b_out="${T[out]:-$b_create}"
  local b_ext4="${T[ext4]:-$b_out}"
  local b_rootfs="${T[rootfs]:-$b_ext4}"
  local b_work="${T[work]:-$b_rootfs}"
  P[$label.accept]="$(secs "$t0" "$b_pull")"
  P[$label.pulling]="$(secs "$b_pull" "$b_create")"
  if [[ -n "${T[work]:-}" ]]; then
    P[$label.resolve]="$(secs "$b_pull" "$b_work")"
    P[$label.pull]="$(secs "$b_work" "$b_rootfs")"
    P[$label.unpack]="$(secs "$b_rootfs" "$b_ext4")"
    P[$label.mkfs]="$(secs "$b_ext4" "$b_out")"
    P[$label.convert]="$(secs "$b_out" "$b_create")"
  else
    P[$label.resolve]="$(secs "$b_pull" "$b_create")"
    P[$label.pull]="0 (cached)" P[$label.unpack]="0 (cached)" P[$label.mkfs]="0 (cached)"
    P[$label.convert]="0 (cached)"
  fi
  P[$label.creating]="$(secs "$b_create" "$b_boot")"
  P[$label.boot]="$(secs "$b_boot" "${T[ready]:-}")"
  P[$label.probe]="$(secs "${T[ready]:-}" "${T[active]}")"
  P[$label.bootstrapping]="$(secs "$b_boot" "${T[active]}")"
  P[$label.total]="$(secs "$t0" "${T[active]}")"
  declare -p T >"$work/raw/$label-stamps.txt"
}

delete_host() {
  local code
  code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 300 -X DELETE -H "$auth" \
    "$url/hosts/$1")"
  [[ "$code" == 204 ]] || lb_warn "DELETE /hosts/$1 → $code"
}

host_name() { jq -r .name "$work/raw/$1"; }

# --- 1. cold and warm creates ------------------------------------------------------------------
lb_log "cold create (image not cached): $image"
create_async cold
domain_names+=("$(host_name cold-post.json)")
delete_host "${P[cold.id]}"

lb_log "warm create (cached base), polled"
create_async warm
domain_names+=("$(host_name warm-post.json)")
warm_dir="$state/vms/${P[warm.id]}"
# The bare boot uses this very seed and an overlay of the same virtual size.
cp "$warm_dir/seed.iso" "$work/bare/seed.iso"
disk_virtual="$(qemu-img info -U --output=json "$warm_dir/disk.qcow2" | jq -r '."virtual-size"')"
base_disk="$(qemu-img info -U --output=json "$warm_dir/disk.qcow2" | jq -r '."full-backing-filename"')"
curl -fsS -H "$auth" "$url/hosts/${P[warm.id]}" >"$work/raw/warm-host.json"
cpus="$(jq -r .cpus "$work/raw/warm-host.json")"
memory="$(jq -r .memory_mib "$work/raw/warm-host.json")"
warm_name="$(host_name warm-post.json)"
virsh -q -c qemu:///system dumpxml "$warm_name" >"$work/raw/warm-domain.xml"
cp "/var/log/libvirt/qemu/$warm_name.log" "$work/raw/warm-libvirt-qemu.log" || true
base_bytes="$(du -B1 "$base_disk" | cut -f1)"
delete_host "${P[warm.id]}"

lb_log "warm create, blocking POST"
read -r code blocking_s < <(curl -sS -o "$work/raw/blocking-post.json" \
  -w '%{http_code} %{time_total}\n' --max-time 1800 -X POST -H "$auth" \
  -H 'Content-Type: application/json' -d '{}' "$url/hosts")
[[ "$code" == 201 ]] || lb_die "blocking POST /hosts → $code: $(cat "$work/raw/blocking-post.json")"
blocking_id="$(jq -r .id "$work/raw/blocking-post.json")"
hosts_made+=("$blocking_id")
domain_names+=("$(host_name blocking-post.json)")
delete_host "$blocking_id"

# --- 2. bare qemu boot of the same disk and seed ------------------------------------------------
# bare_boot LABEL INITRD [CGROUP]: boots a fresh overlay on the cached base with the warm host's seed;
# sets bare_ready_s (start → ready line) and bare_ssh_s (start → SSH banner on the forward).
bare_boot() {
  local label="$1" initrd="$2" cgroup="${3:-}" port t0 t_ready="" t_ssh="" cfd line sfd
  local disk="$work/bare/$label.qcow2" console="$work/bare/$label-console.log"
  rm -f "$disk" "$console"
  qemu-img create -q -f qcow2 -F qcow2 -b "$base_disk" "$disk" "$disk_virtual"
  port="$(port_outside_ssh_range)"
  : >"$console"
  # shellcheck disable=SC2054  # the commas belong to qemu's option syntax
  local cmd=(qemu-system-x86_64 -name "bootbench-$label" -machine pc,accel=tcg -cpu max
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
  cp "$console" "$work/raw/" || true
  bare_ready_s="$(secs "$t0" "$t_ready")"
  bare_ssh_s="$(secs "$t0" "$t_ssh")"
}

# The kernel command line the driver gave the warm guest, as libvirt kept it.
cmdline="$(sed -n 's|.*<cmdline>\(.*\)</cmdline>.*|\1|p' "$work/raw/warm-domain.xml" | head -n 1)"
[[ -n "$cmdline" ]] || lb_die "no <cmdline> in the warm guest's domain XML"

# libvirt puts each guest's threads under the cpu cgroup "machine", one scheduling entity
# (cpu.shares 1024) for all guests on the host, weighed against every other process on it.
# The like-for-like baseline runs there too, in a cgroup of its own; a second bare boot in
# this script's own cgroup shows what that placement costs on a loaded machine.
bare_cgroup=""
for parent in /sys/fs/cgroup/cpu/machine /sys/fs/cgroup/machine; do
  if [[ -d "$parent" && -w "$parent" ]]; then
    bare_cgroup="$parent/bootbench-$(basename "$work")"
    mkdir -p "$bare_cgroup"
    break
  fi
done
[[ -n "$bare_cgroup" ]] || lb_warn "no machine cpu cgroup: the bare boot runs where this script runs"
lb_log "bare qemu boot (small initrd) in the cpu cgroup ${bare_cgroup:-of this script}"
bare_boot small "$LITTERBOX_INITRD" "$bare_cgroup"
bare_small_ready="$bare_ready_s" bare_small_ssh="$bare_ssh_s" bare_small_cpu="$bare_cpu"
[[ -n "$bare_cgroup" ]] && { rmdir "$bare_cgroup" 2>/dev/null || true; }
lb_log "bare qemu boot (small initrd) in this script's cgroup"
bare_boot root "$LITTERBOX_INITRD"
bare_root_ready="$bare_ready_s" bare_root_cpu="$bare_cpu"
# Paired: a blocking create through the API and a bare boot started together, both in the
# machine cgroup, so that both meet the same load from the rest of the machine.
lb_log "paired: API create and bare boot at the same time"
[[ -n "$bare_cgroup" ]] && mkdir -p "$bare_cgroup"
curl -sS -o "$work/raw/pair-post.json" -w '%{http_code} %{time_total}\n' --max-time 1800 \
  -X POST -H "$auth" -H 'Content-Type: application/json' -d '{}' "$url/hosts" \
  >"$work/raw/pair-post.txt" 2>&1 &
pair_curl=$!
bare_boot pair "$LITTERBOX_INITRD" "$bare_cgroup"
pair_bare="$bare_ready_s" pair_bare_cpu="$bare_cpu"
wait "$pair_curl" || true
[[ -n "$bare_cgroup" ]] && { rmdir "$bare_cgroup" 2>/dev/null || true; }
read -r pair_code pair_api <"$work/raw/pair-post.txt" || true
[[ "$pair_code" == 201 ]] || lb_die "paired POST /hosts → $pair_code: $(cat "$work/raw/pair-post.json")"
pair_id="$(jq -r .id "$work/raw/pair-post.json")"
hosts_made+=("$pair_id")
domain_names+=("$(host_name pair-post.json)")
delete_host "$pair_id"

stock_ready="" stock_ssh="" stock_cpu=""
if ((before)); then
  stock_initrd="/boot/initrd.img-${LITTERBOX_KERNEL#/boot/vmlinuz-}"
  lb_log "bare qemu boot (stock initrd $stock_initrd)"
  [[ -n "$bare_cgroup" ]] && mkdir -p "$bare_cgroup"
  bare_boot stock "$stock_initrd" "$bare_cgroup"
  [[ -n "$bare_cgroup" ]] && { rmdir "$bare_cgroup" 2>/dev/null || true; }
  stock_ready="$bare_ready_s" stock_ssh="$bare_ssh_s" stock_cpu="$bare_cpu"
fi

# --- 3. concurrent creates ---------------------------------------------------------------------
conc_rows=""
conc_ok=0
conc_wall=""
if ((concurrent > 0)); then
  lb_log "$concurrent concurrent creates"
  t0="$(now_us)"
  pids=()
  for ((i = 1; i <= concurrent; i++)); do
    curl -sS -o "$work/raw/conc-$i.json" -w '%{http_code} %{time_total}\n' --max-time 1800 \
      -X POST -H "$auth" -H 'Content-Type: application/json' -d '{}' "$url/hosts" \
      >"$work/raw/conc-$i.txt" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
  conc_wall="$(secs "$t0" "$(now_us)")"
  for ((i = 1; i <= concurrent; i++)); do
    read -r code took <"$work/raw/conc-$i.txt" || true
    id="$(jq -r '.id // empty' "$work/raw/conc-$i.json" 2>/dev/null || true)"
    if [[ -n "$id" ]]; then
      hosts_made+=("$id")
      domain_names+=("$(host_name "conc-$i.json")")
    fi
    [[ "$code" == 201 ]] && conc_ok=$((conc_ok + 1))
    conc_rows+="| concurrent create $i of $concurrent | $(printf '%.2f' "${took:-0}") | HTTP ${code:-?}"
    conc_rows+="$([[ "$code" == 201 ]] || echo ": $(jq -r '.error.message // .' "$work/raw/conc-$i.json" 2>/dev/null | head -c 200)") |"$'\n'
  done
  for ((i = 1; i <= concurrent; i++)); do
    id="$(jq -r '.id // empty' "$work/raw/conc-$i.json" 2>/dev/null || true)"
    [[ -n "$id" ]] && delete_host "$id"
  done
fi

# --- report ------------------------------------------------------------------------------------
ratio="$(awk -v a="$pair_api" -v b="$pair_bare" 'BEGIN { printf "%.3f", a / b }')"
ratio_seq="$(awk -v a="$blocking_s" -v b="$bare_small_ready" 'BEGIN { printf "%.3f", a / b }')"
ratio_seq_root="$(awk -v a="$blocking_s" -v b="$bare_root_ready" 'BEGIN { printf "%.3f", a / b }')"
ratio_cpu="$(awk -v a="${P[warm.cpu]}" -v b="$bare_root_cpu" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "?" }')"
outside_guest="$(awk -v a="${P[warm.accept]}" -v c="${P[warm.pulling]}" -v d="${P[warm.creating]}" \
  -v e="${P[warm.probe]}" 'BEGIN { printf "%.2f", a + c + d + e }')"
ratio_async="$(awk -v a="${P[warm.total]}" -v b="$bare_small_ready" 'BEGIN { printf "%.3f", a / b }')"
verdict="$(awk -v r="$ratio" 'BEGIN { print (r + 0 <= 1.05) ? "met" : "MISSED" }')"
kib() { awk -v b="$1" 'BEGIN { if (b == "") print "?"; else printf "%.0f KiB", b / 1024 }'; }
row() { printf '| %s | %s | %s |\n' "$2" "${P[cold.$1]}" "${P[warm.$1]}"; }

cat <<TABLE

litterbox boot benchmark — TCG, $(nproc) cores, load average before $load_before
guest: $cpus vCPU, $memory MiB; kernel $(basename "$LITTERBOX_KERNEL"); image $image

Phases of one create through the API (\`Prefer: respond-async\`, GET /hosts/{id} polled every
50 ms on a keep-alive connection; image-store steps seen as its work files appear; the ready
line seen on the guest's console file), seconds:

| phase | cold (image not cached) | warm (cached) |
|---|---:|---:|
$(row accept "POST → pulling_image (request, row)")
$(row pulling "pulling_image (all)")
$(row resolve "· resolve reference → digest")
$(row pull "· pull blobs from the registry")
$(row unpack "· apply layers → rootfs")
$(row mkfs "· mkfs.ext4 -d")
$(row convert "· qemu-img convert, publish")
$(row creating "creating_vm (port, overlay, seed, define, start)")
$(row bootstrapping "bootstrapping (all)")
$(row boot "· boot → cloud-init final (ready line)")
$(row probe "· ready line → active (console poll, SSH probe)")
$(row total "**create → active**")
| overlay on disk at bootstrapping start (base: $(kib "$base_bytes")) | $(kib "${P[cold.overlay]}") | $(kib "${P[warm.overlay]}") |

| measurement | seconds | notes |
|---|---:|---|
| warm create → active, blocking POST | $(printf '%.2f' "$blocking_s") | curl time_total, no polling |
| bare qemu → ready line (small initrd) | $bare_small_ready | same base, seed, kernel, initrd, cmdline; cpu cgroup beside the guests' |
| bare qemu → SSH banner on the forward | $bare_small_ssh | |
| bare qemu → ready line, outside the machine cgroup | $bare_root_ready | qemu CPU to ready line: $bare_root_cpu s |
| paired: API create → active (blocking) | $(printf '%.2f' "$pair_api") | started together with the bare boot below |
| paired: bare qemu → ready line | $pair_bare | machine cgroup; qemu CPU to ready line: $pair_bare_cpu s |
| **ratio API / bare, paired** | **$ratio** | target ≤ 1.05: $verdict |
| ratio, sequential runs | $ratio_seq | blocking warm / bare in machine cgroup ($ratio_seq_root against the bare boot outside it; async polled warm / machine-cgroup bare: $ratio_async) |
| qemu CPU seconds to the ready line | | API warm ${P[warm.cpu]}, cold ${P[cold.cpu]}; bare $bare_small_cpu (machine cgroup), $bare_root_cpu (outside); warm/bare-outside CPU ratio $ratio_cpu |
| warm create time spent outside the guest | $outside_guest | accept + pulling_image + creating_vm + ready line → active |
TABLE
if ((before)); then
  printf '| before: bare qemu → ready line, stock initrd | %s | /boot initrd, same image; qemu CPU to ready line: %s s |\n' \
    "$stock_ready" "$stock_cpu"
  printf '| before: bare qemu → SSH banner, stock initrd | %s | |\n' "$stock_ssh"
fi
if ((concurrent > 0)); then
  printf '%s' "$conc_rows"
  printf '| %d concurrent creates, wall | %s | %d of %d succeeded |\n' "$concurrent" \
    "$conc_wall" "$conc_ok" "$concurrent"
fi
printf '\nload average at the end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
