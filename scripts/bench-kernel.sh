#!/usr/bin/env bash
# The kernel section of `make bench`: app -> sluiced -> upstream with the
# eBPF data path against the same sluiced as an explicit proxy over loopback
# TCP, interleaved round by round. Three targets, each with its own sluiced
# (1 worker, CPU PROXY_CPU) and its own two sluice-upstream backends (CPU
# LOAD_CPU, like wrk):
#   explicit    --bpf off; wrk -> 127.0.0.1:<outbound> with a Host header
#   ebpf        capture + sk_msg redirection + kernel splice of TCP routes;
#               wrk inside an enabled cgroup
#               dials the VIP 127.10.0.1:9080 (nothing listens there)
#   ebpf-nored  capture only (--no-bpf-redirect --no-bpf-splice): what
#               redirection and splicing add
# Two load shapes per target and round: latency (wrk -c1: one request at a
# time, so p50 is the round trip) and throughput (wrk -c$CONNS).
# Then the L4 section: a TCP-route service (VIP 127.10.0.2:9000 -> the v1
# backend), large transfers (wrk -c4, L4_SIZE-byte responses, 1 MiB) through ebpf (kernel
# splice) and ebpf-nored (userspace copy loop), and straight to a backend
# with no proxy (the ceiling both chase), interleaved; reports MB/s
# and the whole machine's busy CPU per GB moved (the splice runs in softirq
# and kernel workers, so the proxy's own CPU would flatter it). wrk is not
# pinned here (L4_PIN=1 pins it to LOAD_CPU like the rest): the splice's
# work runs wherever the kernel schedules it, not on the proxy's CPU, so
# pinning only measures which CPU it lands on. And the L4 section runs at
# nice L4_NICE (0), the measured processes reniced to it: the splice's bytes
# are moved by the kernel's per-CPU psock worker, a kworker at nice 0, on
# the CPU the upstream's send arrived on; at the -20 the rest of the bench
# uses, the upstream and wrk leave that worker almost no time (CFS weights
# 88761 to 1024) and the run measures the priority, not the path. A node
# runs its apps at 0 too. L4_NICE=-20 shows that effect.
#
# Needs root and cgroup v2 (pins go under /sys/fs/bpf, or a private bpffs
# when that is not one); otherwise it says why and
# exits 0 so `make bench` still reports the userspace section. Everything
# it creates is its own: cgroups sluice-bench-<pid>-* under the cgroup2
# mount, pins under $BPFROOT/sluice-bench-<pid>-*; removed on exit.
# Env: ROUNDS (5), DURATION (5), CONNS (32), PROXY_CPU (0), LOAD_CPU (1).
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
. scripts/bench/lib.sh

# ROUNDS, DURATION, CONNS, PROXY_CPU, LOAD_CPU, NICE: lib.sh
L4_PIN=${L4_PIN:-0}
L4_NICE=${L4_NICE:-0}
L4_ONLY=${L4_ONLY:-0}  # skip the HTTP section (iterating on the L4 path)
VIP=127.10.0.1
REQ_PATH=/reviews/1
HOST_HEADER='Host: reviews:9080'

skip() { echo "bench-kernel: skipped: $*"; exit 0; }
bpfCheck
trap bpfRelease EXIT
[ -z "$BPF_UNAVAILABLE" ] || skip "$BPF_UNAVAILABLE"
for bin in sluiced sluicectl sluice-upstream; do
  [ -x "$BUILD/$bin" ] || { echo "bench-kernel: $BUILD/$bin missing" >&2; exit 1; }
done

work=$(mktemp -d /tmp/sluice-bench-kernel.XXXXXX)
tag=sluice-bench-$$
pids=()
cgroups=()
pins=()
cleanup() {
  trap - INT TERM EXIT
  stopProcesses
  # Children before parents: the list was built parent first.
  for ((i = ${#cgroups[@]} - 1; i >= 0; i--)); do rmdir "${cgroups[$i]}" 2>/dev/null || true; done
  # The daemons unpinned their maps on exit; enablement is kept on purpose.
  for p in "${pins[@]}"; do rm -f "$p/sluice_enabled"; rmdir "$p" 2>/dev/null || true; done
  bpfRelease
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkcg() { mkdir "$1"; cgroups+=("$1"); }
# Sets ON to the prefix that runs a command in its own session at the same
# priority, pinned to CPU $1 and, with $2, inside that cgroup. An array, not
# a function: a backgrounded function runs in a subshell, and $! would be
# that subshell instead of the measured process (every step execs).
onCpu() {
  ON=(setsid)
  [ -n "$2" ] && ON+=(scripts/bench/run-in-cgroup.sh "$2")
  ON+=(scripts/bench/run-pinned.sh "$1" "$NICE")
}

declare -A SLUICED_PID PORT WRK_CG URL HDR TARGET_PIDS ADMIN V1_PORT
# startTarget NAME CGROUP_TREE|"" SLUICED_FLAGS...
startTarget() {
  local name=$1 tree=$2; shift 2
  local v1 v2 outbound admin proxy_cg="" pin=""
  freePort v1; freePort v2; freePort outbound; freePort admin
  if [ -n "$tree" ]; then
    mkcg "$tree"; mkcg "$tree/proxy"; mkcg "$tree/app"
    proxy_cg=$tree/proxy
    pin=$BPFROOT/$tag-$name; pins+=("$pin")
  fi
  onCpu "$LOAD_CPU" "$proxy_cg"
  "${ON[@]}" "$BUILD/sluice-upstream" --listen "127.0.0.1:$v1" --name reviews-v1 \
    --threads 1 >"$work/$name-v1.log" 2>&1 & pids+=($!)
  TARGET_PIDS[$name]="$!"
  V1_PORT[$name]=$v1
  "${ON[@]}" "$BUILD/sluice-upstream" --listen "127.0.0.1:$v2" --name reviews-v2 \
    --threads 1 >"$work/$name-v2.log" 2>&1 & pids+=($!)
  waitHttp "http://127.0.0.1:$v1/__counter"; waitHttp "http://127.0.0.1:$v2/__counter"
  mkdir -p "$work/$name-config"
  render scripts/bench/sluice.yaml.in V1_PORT="$v1" V2_PORT="$v2" > "$work/$name-config/reviews.yaml"
  render scripts/bench/tcp.yaml.in V1_PORT="$v1" > "$work/$name-config/bulk.yaml"
  local bpf=(--bpf off)
  [ -n "$tree" ] && bpf=(--bpf required --bpf-cgroup "$tree" --bpf-pin-dir "$pin")
  onCpu "$PROXY_CPU" "$proxy_cg"
  "${ON[@]}" "$BUILD/sluiced" --config-dir "$work/$name-config" \
    --outbound "127.0.0.1:$outbound" --admin "127.0.0.1:$admin" --workers 1 "${bpf[@]}" "$@" \
    >"$work/$name-sluiced.log" 2>&1 & pids+=($!)
  SLUICED_PID[$name]=$!
  TARGET_PIDS[$name]+=" $!"
  ADMIN[$name]=$admin
  if ! waitHttp "http://127.0.0.1:$admin/ready" 200; then
    echo "bench-kernel: $name sluiced not ready:" >&2; cat "$work/$name-sluiced.log" >&2; exit 1
  fi
  if [ -n "$tree" ]; then
    "$BUILD/sluicectl" mesh enable --cgroup "$tree/app" --bpf-pin-dir "$pin" >/dev/null
    WRK_CG[$name]=$tree/app
    URL[$name]="http://$VIP:9080$REQ_PATH"
    HDR[$name]="Host: reviews"
  else
    WRK_CG[$name]=""
    URL[$name]="http://127.0.0.1:$outbound$REQ_PATH"
    HDR[$name]=$HOST_HEADER
  fi
}

startTarget explicit ""
startTarget ebpf "$CGROOT/$tag-ebpf"
startTarget ebpf-nored "$CGROOT/$tag-nored" --no-bpf-redirect --no-bpf-splice
targets=(explicit ebpf ebpf-nored)

# wrk in the target's client cgroup; in the background so signals reach us.
# (-c1 still opens one connection per wrk thread: -t1 keeps it at one.)
wrkRun() {  # target duration conns
  local t=$1
  onCpu "$LOAD_CPU" "${WRK_CG[$t]}"
  "${ON[@]}" wrk -t1 -c"$3" -d"$2"s --latency -H "${HDR[$t]}" "${URL[$t]}" &
  wrk_pid=$!
  wait "$wrk_pid"
}

# A request through each target first; the eBPF ones must really be captured
# (the VIP has no listener: an uncaptured connect is refused).
for t in "${targets[@]}"; do
  onCpu "$LOAD_CPU" "${WRK_CG[$t]}"
  code=$("${ON[@]}" curl -s -o /dev/null -w '%{http_code}' -H "${HDR[$t]}" "${URL[$t]}" || true)
  [ "$code" = 200 ] || { echo "bench-kernel: $t answered '$code' to a probe" >&2; cat "$work/$t-sluiced.log" >&2; exit 1; }
done
echo "bench-kernel: warm-up"
for t in "${targets[@]}"; do wrkRun "$t" 1 "$CONNS" >/dev/null; done

TICK_US=$((1000000 / $(getconf CLK_TCK)))
: > "$work/results"  # target shape rps p50 p99 cpu_us_per_req
for round in $(seq "$ROUNDS"); do
  [ "$L4_ONLY" = 1 ] && break
  for i in 0 1 2; do
    t=${targets[$(((i + round - 1) % 3))]}
    for shape in lat tput; do
      conns=$CONNS; [ "$shape" = lat ] && conns=1
      read -r u0 s0 < <(cpuTicks "${SLUICED_PID[$t]}")
      wrkRun "$t" "$DURATION" "$conns" > "$work/wrk.out"
      read -r u1 s1 < <(cpuTicks "${SLUICED_PID[$t]}")
      read -r rps p50 p99 reqs non2xx errs < <(parseWrk < "$work/wrk.out")
      if [ -z "$reqs" ] || [ "$reqs" -eq 0 ] || [ "$non2xx$errs" != 00 ]; then
        echo "bench-kernel: $t $shape round $round failed:" >&2; cat "$work/wrk.out" >&2; exit 1
      fi
      cpu=$(awk -v d=$((u1 + s1 - u0 - s0)) -v tick="$TICK_US" -v n="$reqs" 'BEGIN { printf "%.3f", d * tick / n }')
      echo "$t $shape $rps $(toMs "$p50") $(toMs "$p99") $cpu" >> "$work/results"
      printf 'bench-kernel: round %d %-10s %-4s %9.0f req/s  p50 %8s  p99 %8s  sluiced cpu %6.2f us/req\n' \
        "$round" "$t" "$shape" "$rps" "$p50" "$p99" "$cpu"
    done
  done
done

# --- L4: large transfers through a TCP route, splice vs copy loop
L4_SIZE=${L4_SIZE:-1048576}  # bytes per response
L4_URL="http://127.10.0.2:9000/bulk?size=$L4_SIZE"
# direct: wrk to the explicit target's v1 backend itself (outside every
# attached tree), no proxy at all: the rate the two proxied paths are
# chasing on this machine.
l4targets=(ebpf ebpf-nored direct)
declare -A L4URL=([ebpf]=$L4_URL [ebpf-nored]=$L4_URL
  [direct]="http://127.0.0.1:${V1_PORT[explicit]}/bulk?size=$L4_SIZE")
WRK_CG[direct]=${WRK_CG[explicit]}
TARGET_PIDS[direct]=${TARGET_PIDS[explicit]%% *}  # its v1 backend only
busyTicks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
toMB() {  # wrk "Transfer/sec" value ("1.23GB", "512.00MB") to MB
  awk -v v="$1" 'BEGIN { n = v + 0
    if (v ~ /GB$/) n *= 1024; else if (v ~ /KB$/) n /= 1024; else if (v ~ /B$/ && v !~ /MB$/) n /= 1048576
    printf "%.1f", n }'
}
for t in "${l4targets[@]}"; do
  onCpu "$LOAD_CPU" "${WRK_CG[$t]}"
  code=$("${ON[@]}" curl -s -o /dev/null -w '%{http_code}' "${L4URL[$t]}" || true)
  log=$work/$t-sluiced.log; [ "$t" = direct ] && log=$work/explicit-v1.log  # no sluiced there
  [ "$code" = 200 ] || { echo "bench-kernel: L4 $t answered '$code'" >&2; cat "$log" >&2; exit 1; }
done
: > "$work/l4results"  # target MB/s cpu_ms_per_GB
# The L4 targets' sluiced and v1 backend (the L4 upstream), every thread,
# and the autogroup their session got from run-pinned.sh, go to L4_NICE.
for t in "${l4targets[@]}"; do
  for pid in ${TARGET_PIDS[$t]}; do
    for task in /proc/"$pid"/task/*; do renice -n "$L4_NICE" -p "${task##*/}" >/dev/null; done
    echo "$L4_NICE" > "/proc/$pid/autogroup" 2>/dev/null || true
  done
done
for round in $(seq "$ROUNDS"); do
  for i in 0 1 2; do
    t=${l4targets[$(((i + round - 1) % 3))]}
    # Same cgroup and priority as the target's; any CPU unless L4_PIN=1.
    ON=(setsid)
    [ -n "${WRK_CG[$t]}" ] && ON+=(scripts/bench/run-in-cgroup.sh "${WRK_CG[$t]}")
    if [ "$L4_PIN" != 1 ]; then
      ON+=(scripts/bench/run-pinned.sh "0-$(($(nproc) - 1))" "$L4_NICE")
    else
      ON+=(scripts/bench/run-pinned.sh "$LOAD_CPU" "$L4_NICE")
    fi
    b0=$(busyTicks)
    "${ON[@]}" wrk -t1 -c4 -d"$DURATION"s "${L4URL[$t]}" > "$work/wrk-l4.out" &
    wrk_pid=$!; wait "$wrk_pid"
    b1=$(busyTicks)
    tr=$(awk '/^Transfer\/sec:/ { print $2 }' "$work/wrk-l4.out")
    errs=$(parseWrk < "$work/wrk-l4.out" | awk '{ print $5 + $6 }')
    if [ -z "$tr" ] || [ "$errs" != 0 ]; then
      echo "bench-kernel: L4 $t round $round failed:" >&2; cat "$work/wrk-l4.out" >&2; exit 1
    fi
    mb=$(toMB "$tr")
    cpu=$(awk -v d=$((b1 - b0)) -v tick="$TICK_US" -v mb="$mb" -v s="$DURATION" \
      'BEGIN { printf "%.1f", d * tick / 1000 / (mb * s / 1024) }')
    echo "$t $mb $cpu" >> "$work/l4results"
    printf 'bench-kernel: round %d L4 %-10s %8.1f MB/s  machine CPU %7.1f ms/GB\n' "$round" "$t" "$mb" "$cpu"
  done
done

# How much of the L4 traffic the kernel spliced: a reader more than 16 MiB
# behind has its direction held, and those bytes are copied by sluiced.
l4stats=$(curl -s "http://127.0.0.1:${ADMIN[ebpf]}/stats" |
  awk -F': ' '$1 == "tcp_cx_spliced" { c = $2 } $1 == "bpf.l4_held" { h = $2 } $1 == "bpf.l4_resumed" { r = $2 }
    $1 == "bpf.l4_spliced_bytes" { s = $2 } $1 == "bpf.l4_held_bytes" { k = $2 }
    END { printf "%d spliced connections; directions held %d times, resumed %d; %.1f%% of bytes spliced",
          c, h, r, (s + k > 0) ? 100 * s / (s + k) : 0 }')
col() { awk -v t="$1" -v s="$2" -v c="$3" '$1 == t && $2 == s { print $c }' "$work/results" | median; }
l4col() { awk -v t="$1" -v c="$2" '$1 == t { print $c }' "$work/l4results" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "nan"; else printf "%.2f", a / b }'; }
{
  echo "## sluice kernel bench: ${ROUNDS} rounds x ${DURATION}s per shape, medians"
  echo
  echo "sluiced (1 worker) on CPU $PROXY_CPU; its two backends and wrk on CPU $LOAD_CPU. Latency shape: wrk -c1;"
  echo "throughput shape: wrk -c$CONNS. $(date -u +%FT%TZ), $(uname -r)."
  echo
  echo "| target | c1 p50 ms | c1 p99 ms | c1 req/s | c$CONNS p50 ms | c$CONNS p99 ms | c$CONNS req/s | c$CONNS sluiced CPU us/req |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for t in "${targets[@]}"; do
    printf '| %s | %.3f | %.3f | %.0f | %.3f | %.3f | %.0f | %.2f |\n' "$t" "$(col "$t" lat 4)" "$(col "$t" lat 5)" \
      "$(col "$t" lat 3)" "$(col "$t" tput 4)" "$(col "$t" tput 5)" "$(col "$t" tput 3)" "$(col "$t" tput 6)"
  done
  echo
  lower() { awk -v p="$1" 'BEGIN { printf "%.0f%% lower", (1 - p) * 100 }'; }
  met() { awk -v p="$1" 'BEGIN { print (p <= 0.75) ? "met" : "NOT met" }'; }
  p=$(ratio "$(col ebpf lat 4)" "$(col explicit lat 4)")
  q=$(ratio "$(col ebpf tput 4)" "$(col explicit tput 4)")
  r=$(ratio "$(col ebpf tput 3)" "$(col explicit tput 3)")
  echo "- ebpf/explicit: c1 p50 ${p}x ($(lower "$p")); c$CONNS p50 ${q}x ($(lower "$q")), c$CONNS req/s ${r}x"
  echo "- target >= 25% lower p50 with eBPF: one request at a time (c1) $(met "$p"); under load (c$CONNS) $(met "$q")"
  echo "- ebpf-nored/explicit: c1 p50 $(ratio "$(col ebpf-nored lat 4)" "$(col explicit lat 4)")x (capture alone, loopback TCP)"
  echo
  echo "L4 (TCP route, and the same backend with no proxy; wrk -t1 -c4, $L4_SIZE-byte responses, wrk $( [ "$L4_PIN" = 1 ] && echo "on CPU $LOAD_CPU" || echo unpinned), nice $L4_NICE; CPU = whole machine, busy ms per GB moved):"
  echo
  echo "| path | MB/s | machine CPU ms/GB |"
  echo "|---|---:|---:|"
  printf '| kernel splice (ebpf) | %.1f | %.1f |\n' "$(l4col ebpf 2)" "$(l4col ebpf 3)"
  printf '| userspace copy (ebpf-nored) | %.1f | %.1f |\n' "$(l4col ebpf-nored 2)" "$(l4col ebpf-nored 3)"
  printf '| no proxy (wrk to the backend) | %.1f | %.1f |\n' "$(l4col direct 2)" "$(l4col direct 3)"
  echo
  r=$(ratio "$(l4col ebpf 2)" "$(l4col ebpf-nored 2)")
  echo "- splice/copy throughput ${r}x; target >= 1.5x: $(awk -v r="$r" 'BEGIN { print (r >= 1.5) ? "met" : "NOT met" }')"
  echo "- splice/copy machine CPU per GB $(ratio "$(l4col ebpf 3)" "$(l4col ebpf-nored 3)")x"
  echo "- of the no-proxy rate: splice $(ratio "$(l4col ebpf 2)" "$(l4col direct 2)")x, copy $(ratio "$(l4col ebpf-nored 2)" "$(l4col direct 2)")x"
  echo "- ebpf: $l4stats"
} | tee "$work/summary.md"
cp "$work/summary.md" "$BUILD/bench-kernel-results.md"
echo "bench-kernel: wrote $BUILD/bench-kernel-results.md"
