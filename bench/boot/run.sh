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
# shellcheck source=../lib/guests.sh
source "$LB_ROOT/bench/lib/guests.sh"

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
bench_require_tools curl jq qemu-img qemu-system-x86_64 libvirtd virtlogd virsh unshare skopeo

bench_name=bootbench
bench_root="${BOOTBENCH_DIR:-/var/tmp/litterbox-bootbench}"
bench_ssh_ports="${BOOTBENCH_SSH_PORTS:-24000-24099}"
bench_enter_namespace "$build" "${args[@]}"
bench_prepare_dirs
bench_install_traps
bench_start_libvirtd
bench_prepare_image
bench_start_pg
bench_server_env
# A boot benchmark: with templates on, creates after the first would be clones.
bench_start_server --templates off
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
bench_timers

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

host_name() { jq -r .name "$work/raw/$1"; }

# --- 1. cold and warm creates ------------------------------------------------------------------
lb_log "cold create (image not cached): $image"
create_async cold
domain_names+=("$(host_name cold-post.json)")
delete_host "${P[cold.id]}"

lb_log "warm create (cached base), polled"
create_async warm
domain_names+=("$(host_name warm-post.json)")
warm_name="$(host_name warm-post.json)"
# The bare boot uses this very seed and an overlay of the same virtual size.
bench_bare_source "${P[warm.id]}" "$warm_name"
cp "$work/raw/bare-source-domain.xml" "$work/raw/warm-domain.xml"
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
# libvirt puts each guest's threads under the cpu cgroup "machine", one scheduling entity
# (cpu.shares 1024) for all guests on the host, weighed against every other process on it.
# The like-for-like baseline runs there too, in a cgroup of its own; a second bare boot in
# this script's own cgroup shows what that placement costs on a loaded machine.
bench_machine_cgroup
lb_log "bare qemu boot (small initrd) in the cpu cgroup ${bare_cgroup:-of this script}"
bare_boot small "$LITTERBOX_INITRD" "$bare_cgroup"
bare_small_ready="$bare_ready_s" bare_small_ssh="$bare_ssh_s" bare_small_cpu="$bare_cpu"
lb_log "bare qemu boot (small initrd) in this script's cgroup"
bare_boot root "$LITTERBOX_INITRD"
bare_root_ready="$bare_ready_s" bare_root_cpu="$bare_cpu"
# Paired: a blocking create through the API and a bare boot started together, both in the
# machine cgroup, so that both meet the same load from the rest of the machine.
lb_log "paired: API create and bare boot at the same time"
curl -sS -o "$work/raw/pair-post.json" -w '%{http_code} %{time_total}\n' --max-time 1800 \
  -X POST -H "$auth" -H 'Content-Type: application/json' -d '{}' "$url/hosts" \
  >"$work/raw/pair-post.txt" 2>&1 &
pair_curl=$!
bare_boot pair "$LITTERBOX_INITRD" "$bare_cgroup"
pair_bare="$bare_ready_s" pair_bare_cpu="$bare_cpu"
wait "$pair_curl" || true
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
  bare_boot stock "$stock_initrd" "$bare_cgroup"
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
