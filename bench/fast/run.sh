#!/usr/bin/env bash
# Fast-creates benchmark (TCG): create → active through the API for each way a create is
# served — pool claim, clone, cold boot — side by side with a bare qemu boot of the same image,
# plus the pool's refill rate and what a pooled guest and a template cost in memory and disk.
# One run, as root; prints Markdown tables.
#
#   bench/fast/run.sh [--no-build] [--pool-claims N] [--clones N] [--clones-set-time N]
#                     [--boots N] [--pool-size P] [--refill-per-minute R] [--runs K] [--keep DIR]
#
#   --pool-claims N  sequential pool claims per run (default 50)
#   --clones N       sequential clone creates per run (default 50)
#   --clones-set-time N  as many clones again whose clock is set by guest-set-time
#                    (LITTERBOX_CLONE_CLOCK=set-time), in blocks of 5 alternating with the
#                    default clones (default 0: none)
#   --boots N        cold boots, each after a bare qemu boot of the same image (default 5:
#                    each is a minute or more under TCG)
#   --pool-size P    warm-pool size while claims are measured (default 2, as scripts/up)
#   --refill-per-minute R  the pool server's LITTERBOX_POOL_REFILL_PER_MINUTE (default 12,
#                    litterboxd's default)
#   --runs K         repeats the pool-claim and clone series K times (default 1) and prints
#                    each run's p50 and p99
#   --keep DIR       copies raw outputs (litterboxd log, per-create timings) to DIR
#
# LB_BUILD_DIR picks the build tree (default build/release); FASTBENCH_DIR the work root
# (default /var/tmp/litterbox-fastbench; the built reference image and guest initrd are
# cached under it); FASTBENCH_SSH_PORTS the forward range (default 24100-24199).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"
# shellcheck source=../lib/guests.sh
source "$LB_ROOT/bench/lib/guests.sh"

build=1
n_pool=50
n_clone=50
n_clone_st=0
n_boot=5
pool_size=2
refill_per_minute=12
runs=1
keep=""
args=("$@")
while (($#)); do
  case "$1" in
    --no-build) build=0; shift ;;
    --pool-claims) n_pool="$2"; shift 2 ;;
    --clones) n_clone="$2"; shift 2 ;;
    --clones-set-time) n_clone_st="$2"; shift 2 ;;
    --boots) n_boot="$2"; shift 2 ;;
    --pool-size) pool_size="$2"; shift 2 ;;
    --refill-per-minute) refill_per_minute="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --keep) keep="$2"; shift 2 ;;
    -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
    *) lb_die "unknown argument $1 (see --help)" ;;
  esac
done
for v in "$n_pool" "$n_clone" "$n_boot" "$pool_size" "$refill_per_minute" "$runs"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || lb_die "every count and rate takes a number ≥ 1 (see --help)"
done
[[ "$n_clone_st" =~ ^[0-9]+$ ]] || lb_die "--clones-set-time takes a number ≥ 0 (see --help)"
((EUID == 0)) || lb_die "run as root (libvirtd, the cluster and qemu need it)"
bench_require_tools curl jq qemu-img qemu-system-x86_64 libvirtd virtlogd virsh unshare skopeo ssh

bench_name=fastbench
bench_root="${FASTBENCH_DIR:-/var/tmp/litterbox-fastbench}"
bench_ssh_ports="${FASTBENCH_SSH_PORTS:-24100-24199}"
bench_enter_namespace "$build" "${args[@]}"
bench_prepare_dirs
bench_install_traps
bench_start_libvirtd
bench_prepare_image
bench_start_pg
bench_server_env
# Debug level: the server logs each claim's and clone's phases, which the report breaks down.
export LITTERBOX_LOG_LEVEL=debug
bench_timers
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- helpers ------------------------------------------------------------------------------------
# serve [FLAG...]: (re)starts litterboxd with FLAGs on the run's database and state dir.
serve() {
  bench_stop_server
  lb_log "litterboxd serve $*"
  bench_start_server "$@"
  http_open
}

# create LABEL PATH: one blocking POST /hosts timed by curl; dies unless it answers 201 with
# X-Litterbox-Create-Path: PATH. Sets took (seconds) and made (the host id), and appends
# "LABEL took id" to $work/raw/creates.txt.
create() {
  local label="$1" want="$2" code got
  read -r code took < <(curl -sS -o "$work/raw/$label.json" -D "$work/raw/$label.headers" \
    -w '%{http_code} %{time_total}\n' --max-time 1800 -X POST -H "$auth" \
    -H 'Content-Type: application/json' -d '{}' "$url/hosts")
  made="$(jq -r '.id // empty' "$work/raw/$label.json" 2>/dev/null || true)"
  if [[ -n "$made" ]]; then
    hosts_made+=("$made")
    domain_names+=("$(jq -r .name "$work/raw/$label.json")")
  fi
  [[ "$code" == 201 ]] || lb_die "$label: POST /hosts → $code: $(head -c 400 "$work/raw/$label.json")"
  got="$(sed -n 's/^[Xx]-[Ll]itterbox-[Cc]reate-[Pp]ath: *\([a-z]*\).*/\1/p' "$work/raw/$label.headers")"
  [[ "$got" == "$want" ]] ||
    lb_die "$label: served by '${got:-no X-Litterbox-Create-Path}', not $want (see $label.headers)"
  echo "$label $took $made" >>"$work/raw/creates.txt"
}

# clock_offset LABEL FILE: logs in to the host the 201 of LABEL made (its private_key and
# known_hosts, strict checking), reads the guest's clock and appends the guest's clock minus
# the host's at the midpoint of the login, and half the login's duration (the bound on that
# difference's error), both in seconds, to FILE.
clock_offset() {
  local json="$work/raw/$1.json" dir="$work/raw/ssh-$1" t0 t1 guest
  mkdir -p "$dir"
  jq -r .private_key "$json" >"$dir/key"
  chmod 0600 "$dir/key"
  jq -r .known_hosts "$json" >"$dir/known_hosts"
  t0="$(now_us)"
  guest="$(ssh -F none -i "$dir/key" -o IdentitiesOnly=yes -o BatchMode=yes \
    -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$dir/known_hosts" -o ConnectTimeout=30 \
    -p "$(jq -r .ssh_port "$json")" "$(jq -r .ssh_username "$json")@$(jq -r .ssh_host "$json")" \
    'date +%s%N')" || lb_die "$1: SSH login to read the guest clock failed"
  t1="$(now_us)"
  awk -v g="$guest" -v a="$t0" -v b="$t1" \
    'BEGIN { printf "%.3f %.3f\n", g / 1e9 - (a + b) / 2e6, (b - a) / 2e6 }' >>"$2"
}

# metric NAME SELECTOR: sets mval to the value of the first sample of NAME whose labels contain
# SELECTOR (e.g. state="ready"), 0 when there is none. One GET on the keep-alive connection.
metric() {
  local line
  mval=0
  if ! http_get /metrics || [[ "$http_code" != 200 ]]; then
    http_open
    http_get /metrics || lb_die "GET /metrics failed"
  fi
  while IFS= read -r line; do
    if [[ "$line" == "$1{"* && "$line" == *"$2"* ]]; then
      mval="${line##* }"
      mval="${mval%%.*}"
      return 0
    fi
  done <<<"$http_body"
}

# wait_pool_full TIMEOUT_S: polls /metrics every 50 ms until P members are ready; sets full_us.
wait_pool_full() {
  local deadline=$((${EPOCHREALTIME/./} + $1 * 1000000))
  while :; do
    metric litterbox_pool_members 'state="ready"'
    if ((mval >= pool_size)); then
      full_us="${EPOCHREALTIME/./}"
      return 0
    fi
    ((${EPOCHREALTIME/./} < deadline)) ||
      lb_die "the pool did not fill to $pool_size within $1 s (see litterboxd.log, /doctor)"
    nap 0.05
  done
}

# stats FILE: p50, p99 (nearest rank), min, max and mean of the numbers in FILE, one per line;
# sets st_n st_p50 st_p99 st_min st_max st_mean (seconds, 3 decimals).
stats() {
  read -r st_n st_p50 st_p99 st_min st_max st_mean < <(sort -g "$1" | awk '
    { v[NR] = $1; s += $1 }
    END {
      if (NR == 0) { print "0 — — — — —"; exit }
      r50 = int(0.50 * NR); if (r50 < 0.50 * NR) r50++
      r99 = int(0.99 * NR); if (r99 < 0.99 * NR) r99++
      printf "%d %.3f %.3f %.3f %.3f %.3f\n", NR, v[r50], v[r99], v[1], v[NR], s / NR
    }')
}
srow() { printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$st_n" "$st_p50" "$st_p99" \
  "$st_min" "$st_max" "$st_mean" "$2"; }
mib() { awk -v b="$1" 'BEGIN { if (b == "") print "?"; else printf "%.1f MiB", b / 1048576 }'; }
met() { awk -v a="$1" -v b="$2" 'BEGIN { print (a + 0 <= b + 0) ? "met" : "MISSED" }'; }

# --- 1. cold boots (--templates off), and the bare qemu boot of the same image -----------------
serve --templates off
lb_log "first create: the image is pulled and converted (not counted among the boots)"
create first-boot boot
first_s="$took"
first_id="$made"
# The bare boot reuses this host's seed, overlay size, base, size and kernel command line.
bench_bare_source "$first_id" "$(jq -r .name "$work/raw/first-boot.json")"
delete_host "$first_id"
# Bare and cold boots alternate, one pair at a time, so that both see the same load on this
# shared machine: the ratio is taken from pairs side by side, not from series minutes apart.
# The bare boot runs while no guest does, in a cpu cgroup under `machine` beside where libvirt
# puts its guests (bench/boot/README.md: on a loaded machine the placement matters).
bench_machine_cgroup
: >"$work/raw/boot.txt"
: >"$work/raw/bare.txt"
: >"$work/raw/bare-ssh.txt"
: >"$work/raw/pair-ratio.txt"
for ((i = 1; i <= n_boot; i++)); do
  lb_log "pair $i of $n_boot: bare qemu boot in the cpu cgroup ${bare_cgroup:-of this script}"
  bare_boot "bare-$i" "$LITTERBOX_INITRD" "$bare_cgroup"
  echo "$bare_ready_s" >>"$work/raw/bare.txt"
  echo "$bare_ssh_s" >>"$work/raw/bare-ssh.txt"
  lb_log "pair $i of $n_boot: cold boot"
  create "boot-$i" boot
  echo "$took" >>"$work/raw/boot.txt"
  awk -v a="$took" -v b="$bare_ready_s" 'BEGIN { printf "%.3f\n", a / b }' >>"$work/raw/pair-ratio.txt"
  delete_host "$made"
done

# --- 2. clones: templates on, no pool ------------------------------------------------------------
serve --templates on
lb_log "a create with no template yet boots and asks for one; waiting for the template"
t_trigger="$(now_us)"
create template-trigger boot
delete_host "$made"
while :; do
  metric litterbox_templates 'status="ready"'
  ((mval >= 1)) && break
  metric litterbox_templates 'status="failed"'
  ((mval == 0)) || lb_die "the template build failed (see litterboxd.log, /doctor)"
  nap 0.5
done
template_s="$(secs "$t_trigger" "$(now_us)")"
infos=("$state"/templates/*/info)
[[ -f "${infos[0]}" ]] || lb_die "the template is ready but no template directory holds an info file"
tdir="$(dirname "${infos[0]}")"
template_state_bytes="$(stat -c %s "$tdir/state.sav")"
template_disk_bytes="$(du -B1 "$tdir/disk.qcow2" | cut -f1)"
# clone_block SERIES RUN FROM COUNT: COUNT clones labelled SERIES-RUN-i from i = FROM, each
# timed, then logged in to for its clock, then deleted.
clone_block() {
  local i
  for ((i = $3; i < $3 + $4; i++)); do
    lb_log "run $2 of $runs: $1 $i"
    create "$1-$2-$i" clone
    echo "$took" >>"$work/raw/$1-$2.txt"
    clock_offset "$1-$2-$i" "$work/raw/$1-clock.txt"
    delete_host "$made"
  done
}
: >"$work/raw/clone-clock.txt"
: >"$work/raw/clonest-clock.txt"
for ((r = 1; r <= runs; r++)); do
  : >"$work/raw/clone-$r.txt"
  : >"$work/raw/clonest-$r.txt"
  if ((n_clone_st == 0)); then
    clone_block clone "$r" 1 "$n_clone"
    continue
  fi
  # Both clock methods side by side: blocks of 5 alternate, the server restarted between them
  # with the other LITTERBOX_CLONE_CLOCK (same database, state and template).
  done_date=0 done_st=0
  while ((done_date < n_clone || done_st < n_clone_st)); do
    if ((done_st < n_clone_st)); then
      k=$((n_clone_st - done_st < 5 ? n_clone_st - done_st : 5))
      serve --templates on --clone-clock set-time
      clone_block clonest "$r" $((done_st + 1)) "$k"
      done_st=$((done_st + k))
    fi
    if ((done_date < n_clone)); then
      k=$((n_clone - done_date < 5 ? n_clone - done_date : 5))
      serve --templates on --clone-clock date
      clone_block clone "$r" $((done_date + 1)) "$k"
      done_date=$((done_date + k))
    fi
  done
done

# --- 3. pool claims: templates on, a pool of P -----------------------------------------------------
t_serve="$(now_us)"
serve --templates on --pool "$pool_size" --pool-refill-per-minute "$refill_per_minute"
wait_pool_full 1800
fill_s="$(secs "$t_serve" "$full_us")"
: >"$work/raw/refill.txt"
for ((r = 1; r <= runs; r++)); do
  : >"$work/raw/pool-$r.txt"
  for ((i = 1; i <= n_pool; i++)); do
    lb_log "run $r of $runs: pool claim $i of $n_pool"
    create "pool-$r-$i" pool
    echo "$took" >>"$work/raw/pool-$r.txt"
    t_claimed="$(now_us)"
    delete_host "$made"
    # Refill: from the claim's answer until the pool is full again (the DELETE of the claimed
    # host runs meanwhile, as it would for a caller).
    wait_pool_full 1800
    secs "$t_claimed" "$full_us" >>"$work/raw/refill.txt"
  done
done

# Memory and disk of each pooled guest while the pool is full and nothing else runs.
mem_rows=""
total_pss=0 total_rss=0 total_overlay=0 members=0
for dom in $(virsh -q -c qemu:///system list --name); do
  pid="$(cat "/run/libvirt/qemu/$dom.pid" 2>/dev/null || true)"
  [[ -n "$pid" && -r "/proc/$pid/smaps_rollup" ]] || continue
  pss_kib="$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup")"
  rss_kib="$(awk '/^Rss:/ { print $2 }' "/proc/$pid/smaps_rollup")"
  overlay="$(virsh -q -c qemu:///system domblklist "$dom" --details |
    awk '$2 == "disk" && $3 == "vda" { print $4 }')"
  overlay_bytes="$(du -B1 "$overlay" | cut -f1)"
  members=$((members + 1))
  total_pss=$((total_pss + pss_kib * 1024))
  total_rss=$((total_rss + rss_kib * 1024))
  total_overlay=$((total_overlay + overlay_bytes))
  mem_rows+="| pool member $members ($dom) | $(mib $((pss_kib * 1024))) | $(mib $((rss_kib * 1024))) | $(mib "$overlay_bytes") |"$'\n'
done
((members == pool_size)) || lb_warn "$members running guests measured, pool size $pool_size"
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

# phases LABEL_PREFIX: where the time of the creates labelled LABEL_PREFIX* went, from the
# server's log lines for their host ids (debug level: litterboxd's own phase timings) and
# curl's total. Writes one file per phase, in seconds: $work/raw/phase-<LABEL_PREFIX><PHASE>.txt.
phases() {
  jq -R -r 'fromjson? | .msg // empty' "$work/litterboxd.log" >"$work/raw/messages.txt"
  awk -v want="$1" -v out="$work/raw/phase-$1" '
    function num(s, key,   i, rest) {
      i = index(s, key)
      if (i == 0) return ""
      rest = substr(s, i + length(key))
      return rest + 0
    }
    function put(name, ms) { if (ms != "") print ms / 1000 > (out name ".txt") }
    FNR == NR {
      if ($0 !~ /^host [0-9a-f-]+: /) next
      id = substr($2, 1, length($2) - 1)
      if (index($0, ": pool claim: image resolved in ")) {
        resolve[id] = num($0, "resolved in "); claim[id] = num($0, "member claimed in ")
      } else if (index($0, ": login applied in ")) {
        lookup[id] = num($0, "lookup "); files[id] = num($0, "files "); ssh[id] = num($0, "SSH ")
        login[id] = num($0, "applied in ")
      } else if (index($0, "(pool; login and SSH proof ")) {
        lane[id] = num($0, "SSH proof "); act[id] = num($0, "activation ")
      } else if (index($0, ": clone of ")) {
        c_total[id] = num($0, " in "); c_restore[id] = num($0, "restore ")
        c_agent[id] = num($0, "agent "); c_key[id] = num($0, "host key ")
        c_clock[id] = num($0, "clock "); c_ident[id] = num($0, "identity ")
        c_ssh[id] = num($0, "SSH "); c_files[id] = num($0, "files ")
      }
      next
    }
    index($1, want) == 1 {
      id = $3; total = $2 * 1000
      if (id in resolve) {
        put("resolve", resolve[id]); put("claim", claim[id]); put("lookup", lookup[id])
        put("files", files[id]); put("ssh", ssh[id]); put("activate", act[id])
        rest = total - resolve[id] - claim[id] - lane[id] - act[id]
        put("other", rest < 0 ? 0 : rest)
      } else if (id in c_total) {
        put("c_files", c_files[id]); put("c_restore", c_restore[id]); put("c_agent", c_agent[id])
        put("c_key", c_key[id]); put("c_clock", c_clock[id]); put("c_ident", c_ident[id])
        put("c_ssh", c_ssh[id])
        put("c_other", total - c_total[id] < 0 ? 0 : total - c_total[id])
      }
    }' "$work/raw/messages.txt" "$work/raw/creates.txt"
}
# prow LABEL_PREFIX PHASE TEXT: a row of the phase table (n, p50, p99, min, max, mean, in ms).
prow() {
  local f="$work/raw/phase-$1$2.txt"
  [[ -s "$f" ]] || {
    printf '| %s | 0 | | | | | |\n' "$3"
    return 0
  }
  sort -g "$f" | awk -v label="$3" '
    { v[NR] = $1 * 1000; s += $1 * 1000 }
    END {
      r50 = int(0.50 * NR); if (r50 < 0.50 * NR) r50++
      r99 = int(0.99 * NR); if (r99 < 0.99 * NR) r99++
      printf "| %s | %d | %.0f | %.0f | %.0f | %.0f | %.0f |\n", label, NR, v[r50], v[r99], v[1], v[NR], s / NR
    }'
}

# --- report ----------------------------------------------------------------------------------------
stats "$work/raw/boot.txt"
boot_p50="$st_p50"
boot_table="$(srow "cold boot (\`--templates off\`), each right after a bare boot" "—")"
stats "$work/raw/bare.txt"
bare_p50="$st_p50"
bare_table="$(srow "bare qemu → ready line (same base, seed, kernel, initrd, cmdline)" "machine cgroup")"
stats "$work/raw/bare-ssh.txt"
bare_ssh_table="$(srow "bare qemu → SSH banner on the forward" "—")"
stats "$work/raw/pair-ratio.txt"
pair_table="$(srow "ratio of each pair: cold boot / the bare boot before it" "spread of the ratio")"
ratio="$(awk -v a="$boot_p50" -v b="$bare_p50" 'BEGIN { printf "%.3f", a / b }')"
stats "$work/raw/clone-1.txt"
clone_table="$(srow "clone (template ready, no pool; clock: /bin/date)" "p50 ≤ 3 s: $(met "$st_p50" 3)")"
clone_st_table=""
if ((n_clone_st > 0)); then
  stats "$work/raw/clonest-1.txt"
  clone_st_table="$(srow "clone, clock by guest-set-time (before), blocks alternating with the row above" "p50 ≤ 3 s: $(met "$st_p50" 3)")"
fi
# clock_row SERIES LABEL: |guest − host| over the series' clock readings.
clock_row() {
  local f="$work/raw/$1-clock.txt"
  [[ -s "$f" ]] || return 0
  awk '{ print ($1 < 0 ? -$1 : $1), $2 }' "$f" | sort -g | awk -v label="$2" '
    { v[NR] = $1; s += $1; if ($2 > e) e = $2 }
    END {
      r50 = int(0.50 * NR); if (r50 < 0.50 * NR) r50++
      printf "| %s | %d | %.3f | %.3f | %.3f | ±%.3f |\n", label, NR, v[r50], v[NR], s / NR, e
    }'
}
stats "$work/raw/pool-1.txt"
pool_table="$(srow "pool claim (pool of $pool_size, full before each claim)" \
  "p50 ≤ 0.150 s: $(met "$st_p50" 0.150); p99 ≤ 1 s: $(met "$st_p99" 1)")"
stats "$work/raw/refill.txt"
refill_table="$(srow "refill: claim answered → pool full again" "—")"
refill_rate="$(awk -v m="$st_mean" 'BEGIN { if (m > 0) printf "%.1f", 60 / m; else print "?" }')"

cat <<TABLE

litterbox fast-creates benchmark — TCG, $(nproc) cores, load average before $load_before, after $load_after
guest: $cpus vCPU, $memory MiB; kernel $(basename "$LITTERBOX_KERNEL"); image $image

Create → active, blocking \`POST /hosts\` timed by curl (time_total), sequential, each host
deleted before the next; every 201 checked for its \`X-Litterbox-Create-Path\`. Seconds;
p50/p99 are nearest-rank (with n < 100 the p99 is the maximum):

| path | n | p50 | p99 | min | max | mean | target |
|---|---:|---:|---:|---:|---:|---:|---|
$pool_table
$clone_table
${clone_st_table:+$clone_st_table
}$boot_table
$bare_table
$bare_ssh_table
$pair_table
| first create (image pulled, then booted) | 1 | $(printf '%.3f' "$first_s") | | | | | not counted above |
| **ratio cold boot p50 / bare qemu p50** | | **$ratio** | | | | | ≤ 1.05: $(met "$ratio" 1.05) |

Clone clocks: each clone logged in to after its create (strict host-key checking, its own
key), \`date +%s%N\` in the guest against the host's clock at the login's midpoint; seconds,
|guest − host|; the error bound is half the longest login:

| clock set by | n | p50 | max | mean | error bound |
|---|---:|---:|---:|---:|---:|
$(clock_row clone "/bin/date through guest-exec (default)")
$(clock_row clonest "guest-set-time (system clock, then hwclock -w)")

Pool refill (one member restored per claim, \`LITTERBOX_POOL_REFILL_PER_MINUTE\` $refill_per_minute):

| measurement | n | p50 | p99 | min | max | mean | notes |
|---|---:|---:|---:|---:|---:|---:|---|
$refill_table
| refill rate | | | | | | | $refill_rate members/min (60 s / mean refill) |
| initial fill: serve → $pool_size ready | 1 | $fill_s | | | | | template already saved |
| template: first create → template ready | 1 | $template_s | | | | | a cold boot of the template guest, strip, save, beside the first create's boot |

Memory and disk per pooled guest (QEMU's \`/proc/<pid>/smaps_rollup\`: PSS splits the pages
shared between QEMUs; overlay: allocated bytes of the member's qcow2 on the frozen template disk):

| guest | QEMU PSS | QEMU RSS | overlay on disk |
|---|---:|---:|---:|
${mem_rows}| **total, $members members** | **$(mib "$total_pss")** | $(mib "$total_rss") | $(mib "$total_overlay") |
| template (shared by all clones) | state file $(mib "$template_state_bytes") | | frozen disk $(mib "$template_disk_bytes") |
TABLE

phases pool-1-
phases clone-1-
# No backquotes in the labels below: inside $(...) in this here-document they would run.
cat <<TABLE

Where a pool claim's time goes (run 1; litterboxd's debug log per claimed host id, curl's total;
milliseconds; nearest-rank p50/p99):

| phase | n | p50 | p99 | min | max | mean |
|---|---:|---:|---:|---:|---:|---:|
$(prow pool-1- resolve "resolve the tag's digest (registry HEAD, else skopeo; in the request)")
$(prow pool-1- claim "claim transaction (key, member locked SKIP LOCKED, member → host)")
$(prow pool-1- lookup "apply_login: libvirt lookup, early SSH connect")
$(prow pool-1- files "apply_login: login files through the guest agent")
$(prow pool-1- ssh "readiness proof: SSH handshake presenting the pinned key")
$(prow pool-1- activate "activation transaction (→ active)")
$(prow pool-1- other "rest: HTTP, parsing, claim-lane hand-off, curl")

Where a clone's time goes (run 1; same sources; milliseconds):

| phase | n | p50 | p99 | min | max | mean |
|---|---:|---:|---:|---:|---:|---:|
$(prow clone-1- c_files "overlay, seed and domain files")
$(prow clone-1- c_restore "restore of the saved state")
$(prow clone-1- c_agent "guest agent answering")
$(prow clone-1- c_key "RNG reseed, host key")
$(prow clone-1- c_clock "clock (/bin/date)")
$(prow clone-1- c_ident "identity files (login, env, hostname)")
$(prow clone-1- c_ssh "readiness proof: SSH handshake")
$(prow clone-1- c_other "rest: resolve, transactions, HTTP")
TABLE
if ((n_clone_st > 0)); then
  phases clonest-1-
  cat <<TABLE

The same for the clones whose clock guest-set-time set (milliseconds):

| phase | n | p50 | p99 | min | max | mean |
|---|---:|---:|---:|---:|---:|---:|
$(prow clonest-1- c_files "overlay, seed and domain files")
$(prow clonest-1- c_restore "restore of the saved state")
$(prow clonest-1- c_agent "guest agent answering")
$(prow clonest-1- c_key "RNG reseed, host key")
$(prow clonest-1- c_clock "clock (guest-set-time)")
$(prow clonest-1- c_ident "identity files (login, env, hostname)")
$(prow clonest-1- c_ssh "readiness proof: SSH handshake")
$(prow clonest-1- c_other "rest: resolve, transactions, HTTP")
TABLE
fi

if ((runs > 1)); then
  printf '\nHeadline figures per run (same servers, series repeated; seconds):\n\n'
  printf '| run | pool claim p50 | pool claim p99 | clone p50 | clone p99 |\n|---:|---:|---:|---:|---:|\n'
  for ((r = 1; r <= runs; r++)); do
    stats "$work/raw/pool-$r.txt"
    row="| $r | $st_p50 | $st_p99 |"
    stats "$work/raw/clone-$r.txt"
    printf '%s %s | %s |\n' "$row" "$st_p50" "$st_p99"
  done
fi
