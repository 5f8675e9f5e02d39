#!/usr/bin/env bash
# `make bench`: sluiced (1 worker) against HAProxy (1 thread) and nginx
# (1 worker) on the same 90/10 split over the same two sluice-upstream
# backends, plus the backend alone ("direct"), interleaved round by round
# with wrk -t1 -c32 (keep-alive). Prints medians of requests/s, p50, p99,
# the proxy's CPU microseconds per request and RSS, then sluiced/HAProxy and
# sluiced/nginx ratios against the targets. Writes BUILD/bench-results.md.
#
# "sluiced-actions" is a second sluiced (same flags, same pinning) whose
# route also carries request/response header operations, a uri rewrite, a
# retry policy and a 10% mirror to a third backend (bench/actions.yaml.in);
# it runs in the same interleaved rounds and is reported against the plain
# route as sluiced-actions/sluiced ratios. ACTIONS=0 leaves it out.
#
# "sluiced-ratelimit" is a third sluiced whose outbound listener also has a
# local rate limit (an EnvoyFilter inserting envoy.filters.http.local_ratelimit,
# bench/ratelimit.yaml.in) with a bucket too big to ever refuse: what
# checking every request against the shared bucket costs, reported as
# sluiced-ratelimit/sluiced (issue 20: under 3% of req/s). RATELIMIT=0
# leaves it out.
#
# "sluiced-globalrl" is a fourth sluiced whose outbound listener has a
# global rate limit (envoy.filters.http.ratelimit, every request one
# descriptor, bench/global-ratelimit.yaml.in) counted in a redis-server the
# bench starts on the load CPU, under a limit never reached: what a Redis
# round trip per request costs, reported as sluiced-globalrl/sluiced
# (issue 20: at least 70% of req/s). GLOBALRL=0 leaves it out.
#
# "sluiced-ebpf" is sluiced as it runs on a node: the same flags plus its
# kernel data path (--bpf required). wrk runs in an enabled cgroup and dials
# the service VIP 127.10.0.1:9080; connect4 hands the connection to sluiced,
# and sk_msg moves the bytes socket to socket on both legs. sk_msg only pairs
# sockets whose cgroup has the programs attached, so this target has its own
# two backends (same binary, flags and CPU) inside its cgroup tree, and the
# peers' backends stay outside it, untouched by any program. Its cgroups
# (sluice-bench-<pid>-ebpf under the cgroup2 mount) and pins
# (/sys/fs/bpf/sluice-bench-<pid>-ebpf, or under a private bpffs the run
# mounts when /sys/fs/bpf is not one) are removed on exit. EBPF=0 leaves it
# out; so does a machine without root or cgroup v2 (with the reason).
#
# Pinning (2 cores assumed): the proxy under test runs on CPU 0, the backends
# and wrk share CPU 1, so every proxy gets one whole core and the same load
# generator. "direct" runs wrk against the v1 backend with the proxy core idle.
#
# "sluiced-base" and "sluiced-ebpf-base" (with BASELINE=DIR, a build folder
# of another commit, e.g. `git worktree add /tmp/old <commit> && make -C
# /tmp/old`): the same two targets run with DIR/sluiced, in the same rounds,
# reported as this build / baseline ratios. The way to show a change costs
# nothing: both binaries measured interleaved on the same machine.
#
# Env: ROUNDS (5), DURATION seconds per run (5), CONNS (32), PROXY_CPU (0),
# LOAD_CPU (1), NICE (-20 as root), ACTIONS (1), EBPF (1), BASELINE (unset), PROFILE (0; 1: also
# sample each sluiced run with `perf record -e cpu-clock` and report its
# user-space CPU per request from the samples, which /proc's 10 ms ticks
# split too coarsely to compare builds by). Loopback only: 127.0.0.1, and a
# 127.10.0.1 VIP that only appears in the config.
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
. scripts/bench/lib.sh

# ROUNDS, DURATION, CONNS, PROXY_CPU, LOAD_CPU, NICE, ON_PROXY, ON_LOAD: lib.sh
REQ_PATH=/reviews/1
HOST_HEADER='Host: reviews:9080'
ACTIONS=${ACTIONS:-1}
RATELIMIT=${RATELIMIT:-1}
GLOBALRL=${GLOBALRL:-1}
EBPF=${EBPF:-1}
PROFILE=${PROFILE:-0}
if [ "$PROFILE" = 1 ] && ! command -v perf >/dev/null; then
  echo "bench: PROFILE=1 needs perf (Debian: linux-perf)" >&2; exit 2
fi
PERF_PERIOD_NS=250000  # one cpu-clock sample per 250 us of CPU
BASELINE=${BASELINE:-}
if [ -n "$BASELINE" ] && [ ! -x "$BASELINE/sluiced" ]; then
  echo "bench: BASELINE=$BASELINE has no sluiced (build it there first)" >&2; exit 1
fi

for tool in wrk haproxy nginx taskset curl; do
  command -v "$tool" >/dev/null || { echo "bench: $tool missing (run scripts/install-deps.sh)" >&2; exit 1; }
done
for bin in sluiced sluice-upstream; do
  [ -x "$BUILD/$bin" ] || { echo "bench: $BUILD/$bin missing (make BUILD=$BUILD)" >&2; exit 1; }
done
if [ "$(nproc)" -lt 2 ]; then
  echo "bench: needs 2 CPUs for the proxy/load pinning; found $(nproc)" >&2; exit 1
fi
load=$(cut -d" " -f1 /proc/loadavg)
busy=$(awk -v l="$load" -v n="$(nproc)" 'BEGIN { print (l > n / 2) ? 1 : 0 }')
[ "$busy" = 1 ] && echo "bench: warning: load average $load on $(nproc) CPUs before starting; expect noisy numbers" >&2

work=$(mktemp -d /tmp/sluice-bench.XXXXXX)
pids=()
cgroups=()  # parents first
pins=()
cleanup() {
  trap - INT TERM EXIT
  stopProcesses
  for ((i = ${#cgroups[@]} - 1; i >= 0; i--)); do rmdir "${cgroups[$i]}" 2>/dev/null || true; done
  # sluiced unpinned its maps on exit; the enablement map is kept on purpose.
  for p in "${pins[@]}"; do rm -f "$p/sluice_enabled"; rmdir "$p" 2>/dev/null || true; done
  bpfRelease
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

freePort V1_PORT; freePort V2_PORT
freePort SLUICE_PORT; freePort ADMIN_PORT
freePort HAPROXY_PORT; freePort NGINX_PORT
freePort V3_PORT; freePort ACTIONS_PORT; freePort ACTIONS_ADMIN_PORT
freePort RL_PORT; freePort RL_ADMIN_PORT
freePort GRL_PORT; freePort GRL_ADMIN_PORT; freePort REDIS_PORT

# --- backends (CPU LOAD_CPU, one thread each)
"${ON_LOAD[@]}" "$BUILD/sluice-upstream" --listen "127.0.0.1:$V1_PORT" --name reviews-v1 --threads 1 \
  2>"$work/v1.log" & pids+=($!)
"${ON_LOAD[@]}" "$BUILD/sluice-upstream" --listen "127.0.0.1:$V2_PORT" --name reviews-v2 --threads 1 \
  2>"$work/v2.log" & pids+=($!)
v1_pid=${pids[0]}
# v3: the mirror target of sluiced-actions; no other target sends it anything.
"${ON_LOAD[@]}" "$BUILD/sluice-upstream" --listen "127.0.0.1:$V3_PORT" --name reviews-v3 --threads 1 \
  2>"$work/v3.log" & pids+=($!)
waitHttp "http://127.0.0.1:$V1_PORT/__counter"
waitHttp "http://127.0.0.1:$V2_PORT/__counter"
waitHttp "http://127.0.0.1:$V3_PORT/__counter"

# --- proxies (CPU PROXY_CPU), none daemonized: children of this script
mkdir -p "$work/sluice"
render scripts/bench/sluice.yaml.in V1_PORT="$V1_PORT" V2_PORT="$V2_PORT" > "$work/sluice/reviews.yaml"
"${ON_PROXY[@]}" "$BUILD/sluiced" --config-dir "$work/sluice" --outbound "127.0.0.1:$SLUICE_PORT" \
  --admin "127.0.0.1:$ADMIN_PORT" --workers 1 --bpf off >"$work/sluiced.log" 2>&1 & pids+=($!)
sluiced_pid=$!

base_pid=
if [ -n "$BASELINE" ]; then
  freePort BASE_PORT; freePort BASE_ADMIN_PORT
  "${ON_PROXY[@]}" "$BASELINE/sluiced" --config-dir "$work/sluice" --outbound "127.0.0.1:$BASE_PORT" \
    --admin "127.0.0.1:$BASE_ADMIN_PORT" --workers 1 --bpf off >"$work/sluiced-base.log" 2>&1 & pids+=($!)
  base_pid=$!
fi

actions_pid=
if [ "$ACTIONS" = 1 ]; then
  mkdir -p "$work/sluice-actions"
  render scripts/bench/actions.yaml.in V1_PORT="$V1_PORT" V2_PORT="$V2_PORT" V3_PORT="$V3_PORT" \
    > "$work/sluice-actions/reviews.yaml"
  "${ON_PROXY[@]}" "$BUILD/sluiced" --config-dir "$work/sluice-actions" --outbound "127.0.0.1:$ACTIONS_PORT" \
    --admin "127.0.0.1:$ACTIONS_ADMIN_PORT" --workers 1 --bpf off >"$work/sluiced-actions.log" 2>&1 & pids+=($!)
  actions_pid=$!
fi

rl_pid=
if [ "$RATELIMIT" = 1 ]; then
  mkdir -p "$work/sluice-ratelimit"
  cp "$work/sluice/reviews.yaml" "$work/sluice-ratelimit/reviews.yaml"
  cp scripts/bench/ratelimit.yaml.in "$work/sluice-ratelimit/ratelimit.yaml"
  "${ON_PROXY[@]}" "$BUILD/sluiced" --config-dir "$work/sluice-ratelimit" --outbound "127.0.0.1:$RL_PORT" \
    --admin "127.0.0.1:$RL_ADMIN_PORT" --workers 1 --bpf off >"$work/sluiced-ratelimit.log" 2>&1 & pids+=($!)
  rl_pid=$!
fi

grl_pid=
if [ "$GLOBALRL" = 1 ]; then
  command -v redis-server >/dev/null || { echo "bench: redis-server missing (run scripts/install-deps.sh)" >&2; exit 1; }
  "${ON_LOAD[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work" --daemonize no >"$work/redis.log" 2>&1 & pids+=($!)
  mkdir -p "$work/sluice-globalrl"
  cp "$work/sluice/reviews.yaml" "$work/sluice-globalrl/reviews.yaml"
  cp scripts/bench/global-ratelimit.yaml.in "$work/sluice-globalrl/ratelimit.yaml"
  "${ON_PROXY[@]}" "$BUILD/sluiced" --config-dir "$work/sluice-globalrl" --outbound "127.0.0.1:$GRL_PORT" \
    --admin "127.0.0.1:$GRL_ADMIN_PORT" --workers 1 --bpf off --redis "127.0.0.1:$REDIS_PORT" \
    >"$work/sluiced-globalrl.log" 2>&1 & pids+=($!)
  grl_pid=$!
fi

render scripts/bench/haproxy.cfg.in PROXY_PORT="$HAPROXY_PORT" V1_PORT="$V1_PORT" V2_PORT="$V2_PORT" \
  > "$work/haproxy.cfg"
"${ON_PROXY[@]}" haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 & pids+=($!)
haproxy_pid=$!

mkdir -p "$work/nginx"
render scripts/bench/nginx.conf.in PROXY_PORT="$NGINX_PORT" V1_PORT="$V1_PORT" V2_PORT="$V2_PORT" \
  PREFIX="$work/nginx" > "$work/nginx/nginx.conf"
"${ON_PROXY[@]}" nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" \
  >"$work/nginx.log" 2>&1 & pids+=($!)
nginx_pid=$!

# --- sluiced-ebpf: its own cgroup tree (proxy/ holds sluiced and its two
# backends, app/ the client), enabled through the pinned map like a node.
# startEbpf NAME BINDIR: sets EBPF_PID_<NAME>, EBPF_PORTS_<NAME> (backends),
# EBPF_VIP_<NAME>, EBPF_APP_<NAME> (the client cgroup). Each instance has its
# own tree, pins, backends and service VIP, so two can run side by side.
startEbpf() {
  local name=$1 bin=$2 vip=$3 tree pin p1 p2 sport sadmin
  tree=$CGROOT/sluice-bench-$$-$name
  for cg in "$tree" "$tree/proxy" "$tree/app"; do mkdir "$cg"; cgroups+=("$cg"); done
  pin=$BPFROOT/sluice-bench-$$-$name; pins+=("$pin")
  freePort p1; freePort p2; freePort sport; freePort sadmin
  local in_tree=(setsid scripts/bench/run-in-cgroup.sh "$tree/proxy" scripts/bench/run-pinned.sh)
  "${in_tree[@]}" "$LOAD_CPU" "$NICE" "$BUILD/sluice-upstream" --listen "127.0.0.1:$p1" \
    --name reviews-v1 --threads 1 2>"$work/$name-v1.log" & pids+=($!)
  "${in_tree[@]}" "$LOAD_CPU" "$NICE" "$BUILD/sluice-upstream" --listen "127.0.0.1:$p2" \
    --name reviews-v2 --threads 1 2>"$work/$name-v2.log" & pids+=($!)
  waitHttp "http://127.0.0.1:$p1/__counter"; waitHttp "http://127.0.0.1:$p2/__counter"
  mkdir -p "$work/$name"
  render scripts/bench/sluice.yaml.in V1_PORT="$p1" V2_PORT="$p2" | sed "s/127\.10\.0\.1\b/$vip/" \
    > "$work/$name/reviews.yaml"
  "${in_tree[@]}" "$PROXY_CPU" "$NICE" "$bin/sluiced" --config-dir "$work/$name" \
    --outbound "127.0.0.1:$sport" --admin "127.0.0.1:$sadmin" --workers 1 \
    --bpf required --bpf-cgroup "$tree" --bpf-pin-dir "$pin" >"$work/$name.log" 2>&1 & pids+=($!)
  local pid=$!
  if ! waitHttp "http://127.0.0.1:$sadmin/ready" 200; then
    echo "bench: $name not ready; its log:" >&2; cat "$work/$name.log" >&2; exit 1
  fi
  "$BUILD/sluicectl" mesh enable --cgroup "$tree/app" --bpf-pin-dir "$pin" >/dev/null
  printf -v "EBPF_PID_${name//-/_}" '%s' "$pid"
  printf -v "EBPF_PORTS_${name//-/_}" '%s %s' "$p1" "$p2"
  printf -v "EBPF_VIP_${name//-/_}" '%s' "$vip"
  printf -v "EBPF_APP_${name//-/_}" '%s' "$tree/app"
}

# --- sluiced-ebpf: its own cgroup tree (proxy/ holds sluiced and its two
# backends, app/ the client), enabled through the pinned map like a node.
ebpf_pid=
ebpf_base_pid=
if [ "$EBPF" = 1 ]; then
  bpfCheck
  if [ -n "$BPF_UNAVAILABLE" ]; then
    echo "bench: sluiced-ebpf left out: $BPF_UNAVAILABLE" >&2
  else
    startEbpf sluiced-ebpf "$BUILD" 127.10.0.1
    ebpf_pid=$EBPF_PID_sluiced_ebpf
    if [ -n "$BASELINE" ]; then
      startEbpf sluiced-ebpf-base "$BASELINE" 127.10.0.2
      ebpf_base_pid=$EBPF_PID_sluiced_ebpf_base
    fi
  fi
fi

if ! waitHttp "http://127.0.0.1:$ADMIN_PORT/ready" 200; then
  echo "bench: sluiced not ready; its log:" >&2; cat "$work/sluiced.log" >&2; exit 1
fi
if [ -n "$base_pid" ] && ! waitHttp "http://127.0.0.1:$BASE_ADMIN_PORT/ready" 200; then
  echo "bench: sluiced-base not ready; its log:" >&2; cat "$work/sluiced-base.log" >&2; exit 1
fi
if [ -n "$actions_pid" ] && ! waitHttp "http://127.0.0.1:$ACTIONS_ADMIN_PORT/ready" 200; then
  echo "bench: sluiced-actions not ready; its log:" >&2; cat "$work/sluiced-actions.log" >&2; exit 1
fi
if [ -n "$rl_pid" ] && ! waitHttp "http://127.0.0.1:$RL_ADMIN_PORT/ready" 200; then
  echo "bench: sluiced-ratelimit not ready; its log:" >&2; cat "$work/sluiced-ratelimit.log" >&2; exit 1
fi
if [ -n "$grl_pid" ] && ! waitHttp "http://127.0.0.1:$GRL_ADMIN_PORT/ready" 200; then
  echo "bench: sluiced-globalrl not ready; its log:" >&2; cat "$work/sluiced-globalrl.log" >&2; exit 1
fi
waitHttp "http://127.0.0.1:$HAPROXY_PORT/" || { cat "$work/haproxy.log" >&2; exit 1; }
waitHttp "http://127.0.0.1:$NGINX_PORT/" || { cat "$work/nginx/error.log" >&2; exit 1; }

url_of() {
  case $1 in
    direct) echo "http://127.0.0.1:$V1_PORT$REQ_PATH" ;;
    sluiced) echo "http://127.0.0.1:$SLUICE_PORT$REQ_PATH" ;;
    sluiced-base) echo "http://127.0.0.1:$BASE_PORT$REQ_PATH" ;;
    sluiced-actions) echo "http://127.0.0.1:$ACTIONS_PORT$REQ_PATH" ;;
    sluiced-ratelimit) echo "http://127.0.0.1:$RL_PORT$REQ_PATH" ;;
    sluiced-globalrl) echo "http://127.0.0.1:$GRL_PORT$REQ_PATH" ;;
    sluiced-ebpf) echo "http://$EBPF_VIP_sluiced_ebpf:9080$REQ_PATH" ;;  # the VIP: nothing listens there
    sluiced-ebpf-base) echo "http://$EBPF_VIP_sluiced_ebpf_base:9080$REQ_PATH" ;;
    haproxy) echo "http://127.0.0.1:$HAPROXY_PORT$REQ_PATH" ;;
    nginx) echo "http://127.0.0.1:$NGINX_PORT$REQ_PATH" ;;
  esac
}
# The processes whose CPU and memory a run is charged to. For "direct" that
# is the backend itself: a floor for what serving one request costs.
pids_of() {
  case $1 in
    direct) echo "$v1_pid" ;;
    sluiced) echo "$sluiced_pid" ;;
    sluiced-base) echo "$base_pid" ;;
    sluiced-actions) echo "$actions_pid" ;;
    sluiced-ratelimit) echo "$rl_pid" ;;
    sluiced-globalrl) echo "$grl_pid" ;;
    sluiced-ebpf) echo "$ebpf_pid" ;;
    sluiced-ebpf-base) echo "$ebpf_base_pid" ;;
    haproxy) echo "$haproxy_pid" ;;
    nginx) withChildren "$nginx_pid" ;;
  esac
}

# The v1 and v2 backends a target sends to.
backends_of() {
  case $1 in
    sluiced-ebpf) echo "$EBPF_PORTS_sluiced_ebpf" ;;
    sluiced-ebpf-base) echo "$EBPF_PORTS_sluiced_ebpf_base" ;;
    *) echo "$V1_PORT $V2_PORT" ;;
  esac
}
# The command prefix that runs a load process (wrk, curl) for a target:
# pinned to the load CPU and, for sluiced-ebpf, inside the enabled cgroup.
loadPrefix() {
  LOAD_ON=("${ON_LOAD[@]}")
  case $1 in
    sluiced-ebpf) LOAD_ON=(setsid scripts/bench/run-in-cgroup.sh "$EBPF_APP_sluiced_ebpf"
      scripts/bench/run-pinned.sh "$LOAD_CPU" "$NICE") ;;
    sluiced-ebpf-base) LOAD_ON=(setsid scripts/bench/run-in-cgroup.sh "$EBPF_APP_sluiced_ebpf_base"
      scripts/bench/run-pinned.sh "$LOAD_CPU" "$NICE") ;;
  esac
  return 0
}

targets=(direct sluiced)
[ -n "$base_pid" ] && targets+=(sluiced-base)
[ -n "$ebpf_pid" ] && targets+=(sluiced-ebpf)
[ -n "$ebpf_base_pid" ] && targets+=(sluiced-ebpf-base)
[ -n "$actions_pid" ] && targets+=(sluiced-actions)
[ -n "$rl_pid" ] && targets+=(sluiced-ratelimit)
[ -n "$grl_pid" ] && targets+=(sluiced-globalrl)
targets+=(haproxy nginx)

# A request through every proxy must succeed before measuring anything (for
# sluiced-ebpf that proves the capture: an uncaptured connect is refused).
for t in "${targets[@]}"; do
  loadPrefix "$t"
  code=$("${LOAD_ON[@]}" curl -s -o /dev/null -w '%{http_code}' -H "$HOST_HEADER" "$(url_of "$t")" || true)
  if [ "$code" != 200 ]; then
    echo "bench: $t answered $code to a probe request" >&2
    case $t in sluiced*) cat "$work/$t.log" >&2 ;; esac
    exit 1
  fi
done

# In the background so INT/TERM reach the traps without waiting for wrk.
wrkRun() {  # target seconds
  loadPrefix "$1"
  "${LOAD_ON[@]}" wrk -t1 -c"$CONNS" -d"$2"s --latency -H "$HOST_HEADER" "$(url_of "$1")" &
  wrk_pid=$!
  wait "$wrk_pid"
}

# setsid must not have forked, or the pids measured below are not the peers.
for pid in "${pids[@]}"; do
  case $(cat "/proc/$pid/comm" 2>/dev/null) in
    setsid|nice|taskset|run-pinned.sh|bash|"") echo "bench: pid $pid is not a peer (setsid forked?)" >&2; exit 1 ;;
  esac
done
echo "bench: warm-up (1 s per target)"
for t in "${targets[@]}"; do wrkRun "$t" 1 >/dev/null; done

TICK_US=$((1000000 / $(getconf CLK_TCK)))
# Ticks to microseconds per request of the run just measured ($reqs).
perReq() { awk -v d="$1" -v tick="$TICK_US" -v n="$reqs" 'BEGIN { printf "%.3f", d * tick / n }'; }
ntargets=${#targets[@]}
: > "$work/results"  # target rps p50 p99 cpu_us_per_req rss_kib non2xx sockerrs v1 v2 user_us sys_us v3 perf_user_us
for round in $(seq "$ROUNDS"); do
  # Rotate the order so no target always runs first or after the same peer.
  order=()
  for i in $(seq 0 $((ntargets - 1))); do order+=("${targets[$(((i + round - 1) % ntargets))]}"); done
  # A build and its BASELINE sit side by side in the rotation, so one of the
  # pair would nearly always run just after the other; the second of two
  # back-to-back runs measured up to 15% faster here. Swap each pair every
  # other round (A B, B A, ...) so neither build gets that seat more often.
  if [ $((round % 2)) -eq 0 ]; then
    for pair in "sluiced sluiced-base" "sluiced-ebpf sluiced-ebpf-base"; do
      read -r a b <<< "$pair"
      ia=-1; ib=-1
      for k in "${!order[@]}"; do
        [ "${order[$k]}" = "$a" ] && ia=$k
        [ "${order[$k]}" = "$b" ] && ib=$k
      done
      if [ "$ia" -ge 0 ] && [ "$ib" -ge 0 ]; then order[$ia]=$b; order[$ib]=$a; fi
    done
  fi
  for t in "${order[@]}"; do
    read -r b1 b2 < <(backends_of "$t")
    for port in "$b1" "$b2" "$V3_PORT"; do
      curl -s -o /dev/null -X POST "http://127.0.0.1:$port/__reset"
    done
    mapfile -t tp < <(pids_of "$t")
    read -r u0 s0 < <(cpuTicks "${tp[@]}")
    prof=""
    if [ "$PROFILE" = 1 ] && [[ $t == sluiced* ]]; then
      perf record -q -e cpu-clock -c "$PERF_PERIOD_NS" -p "$(IFS=,; echo "${tp[*]}")" -o "$work/perf.data" \
        -- sleep "$DURATION" >/dev/null 2>&1 &
      prof=$!
    fi
    wrkRun "$t" "$DURATION" > "$work/wrk.out"
    read -r u1 s1 < <(cpuTicks "${tp[@]}")
    [ -n "$prof" ] && wait "$prof"
    rss=$(rssKib "${tp[@]}")
    read -r rps p50 p99 reqs non2xx errs < <(parseWrk < "$work/wrk.out")
    if [ -z "$reqs" ] || [ "$reqs" -eq 0 ]; then
      echo "bench: $t round $round: wrk reported no requests" >&2; cat "$work/wrk.out" >&2; exit 1
    fi
    cpu=$(perReq $((u1 + s1 - u0 - s0))); ucpu=$(perReq $((u1 - u0))); scpu=$(perReq $((s1 - s0)))
    v1=$(backendCount "$b1"); v2=$(backendCount "$b2"); v3=$(backendCount "$V3_PORT")
    # Samples outside the kernel and BPF programs, per request.
    puser=0
    if [ -n "$prof" ]; then
      puser=$(perf report -i "$work/perf.data" --stdio -g none --no-children --sort dso -n 2>/dev/null |
        awk -v n="$reqs" -v period="$PERF_PERIOD_NS" '/%/ && !/^#/ {
          if ($3 ~ /kernel\.kallsyms|^bpf_prog_/) next; u += $2 }
          END { printf "%.3f", u * period / 1000 / n }')
    fi
    echo "$t $rps $(toMs "$p50") $(toMs "$p99") $cpu $rss $non2xx $errs ${v1:-0} ${v2:-0} $ucpu $scpu ${v3:-0} $puser" \
      >> "$work/results"
    printf 'bench: round %d %-15s %10.0f req/s  p50 %6s  p99 %6s  cpu %7.2f us/req%s\n' \
      "$round" "$t" "$rps" "$p50" "$p99" "$cpu" \
      "$( [ "$non2xx$errs" = 00 ] || echo "  ERRORS non2xx=$non2xx socket=$errs")"
    for p in sluiced:$sluiced_pid sluiced-base:$base_pid sluiced-actions:$actions_pid sluiced-ratelimit:$rl_pid sluiced-globalrl:$grl_pid \
             sluiced-ebpf:$ebpf_pid \
             sluiced-ebpf-base:$ebpf_base_pid; do
      [ -n "${p#*:}" ] || continue
      if ! kill -0 "${p#*:}" 2>/dev/null; then
        echo "bench: ${p%%:*} exited during the run; its log:" >&2; tail -50 "$work/${p%%:*}.log" >&2; exit 1
      fi
    done
  done
done

# --- summary
col() { awk -v t="$1" -v c="$2" '$1 == t { print $c }' "$work/results" | median; }
sum() { awk -v t="$1" -v c="$2" '$1 == t { s += $c } END { print s + 0 }' "$work/results"; }
declare -A RPS P50 P99 CPU RSS
for t in "${targets[@]}"; do
  RPS[$t]=$(col "$t" 2); P50[$t]=$(col "$t" 3); P99[$t]=$(col "$t" 4)
  CPU[$t]=$(col "$t" 5); RSS[$t]=$(awk -v k="$(col "$t" 6)" 'BEGIN { printf "%.1f", k / 1024 }')
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "nan"; else printf "%.2f", a / b }'; }
verdict() { awk -v v="$1" -v op="$2" -v lim="$3" 'BEGIN {
  ok = (op == ">=") ? v >= lim : v <= lim; print (ok ? "met" : "NOT met") }'; }

{
  echo "## sluice bench: ${ROUNDS} rounds x ${DURATION}s, wrk -t1 -c${CONNS} keep-alive, medians"
  echo
  echo "Proxy pinned to CPU $PROXY_CPU; backends and wrk to CPU $LOAD_CPU. 90/10 split v1/v2."
  [ -n "$ebpf_pid" ] && echo "sluiced-ebpf: the kernel data path (capture + sk_msg on both legs), wrk dialing the VIP from an enabled cgroup."
  echo "CPU and RSS are the proxy's (for direct: the v1 backend's). $(date -u +%FT%TZ), $(uname -r)."
  echo "Load average before the run: $load on $(nproc) CPUs$( [ "$busy" = 1 ] && echo " (BUSY: numbers are noisy)")."
  echo
  echo "| target | req/s (median) | p50 ms | p99 ms | CPU us/req | RSS MiB |"
  echo "|---|---:|---:|---:|---:|---:|"
  for t in "${targets[@]}"; do
    printf '| %s | %.0f | %.3f | %.3f | %.2f | %s |\n' "$t" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}" "${CPU[$t]}" "${RSS[$t]}"
  done
  echo
  printf 'CPU us/req split user + kernel (medians):'
  for t in "${targets[@]}"; do printf ' %s %.1f + %.1f;' "$t" "$(col "$t" 11)" "$(col "$t" 12)"; done
  echo; echo
  if [ "$PROFILE" = 1 ]; then
    printf 'User-space CPU us/req from perf samples (medians, %d us per sample):' $((PERF_PERIOD_NS / 1000))
    for t in "${targets[@]}"; do [[ $t == sluiced* ]] && printf ' %s %.3f;' "$t" "$(col "$t" 14)"; done
    echo
    for pair in sluiced:sluiced-base sluiced-ebpf:sluiced-ebpf-base; do
      a=${pair%%:*}; b=${pair#*:}
      [ -n "${RPS[$b]:-}" ] || continue
      echo "- $a/$b user-space CPU/req (perf): $(ratio "$(col "$a" 14)" "$(col "$b" 14)")x"
    done
    echo
  fi
  modes=(sluiced)
  [ -n "$ebpf_pid" ] && modes+=(sluiced-ebpf)
  for s in "${modes[@]}"; do
    for peer in haproxy nginx; do
      r=$(ratio "${RPS[$s]}" "${RPS[$peer]}")
      c=$(ratio "${CPU[$s]}" "${CPU[$peer]}")
      p=$(ratio "${P99[$s]}" "${P99[$peer]}")
      echo "- $s/$peer: req/s ${r}x, CPU/req ${c}x, p99 ${p}x"
    done
  done
  echo
  echo "Targets against HAProxy (req/s >= 1.3x, CPU/req <= 0.75x, p99 no worse):"
  for s in "${modes[@]}"; do
    r=$(ratio "${RPS[$s]}" "${RPS[haproxy]}")
    c=$(ratio "${CPU[$s]}" "${CPU[haproxy]}")
    p=$(ratio "${P99[$s]}" "${P99[haproxy]}")
    echo "- $s: req/s $(verdict "$r" '>=' 1.3) (${r}x), CPU/req $(verdict "$c" '<=' 0.75) (${c}x)," \
      "p99 $(verdict "$p" '<=' 1.0) (${p}x)"
  done
  if [ -n "$base_pid" ]; then
    echo
    echo "This build against BASELINE=$BASELINE (same rounds; issue 15 allows at most 3% worse):"
    for pair in sluiced:sluiced-base sluiced-ebpf:sluiced-ebpf-base; do
      a=${pair%%:*}; b=${pair#*:}
      [ -n "${RPS[$b]:-}" ] || continue
      echo "- $a/$b: req/s $(ratio "${RPS[$a]}" "${RPS[$b]}")x, CPU/req $(ratio "${CPU[$a]}" "${CPU[$b]}")x," \
        "p99 $(ratio "${P99[$a]}" "${P99[$b]}")x"
    done
  fi
  # A variant of sluiced against the plain one: its ratios under a heading.
  variantRatios() {  # target heading
    echo
    echo "$2"
    echo "- $1/sluiced: req/s $(ratio "${RPS[$1]}" "${RPS[sluiced]}")x, CPU/req $(ratio "${CPU[$1]}" "${CPU[sluiced]}")x," \
      "p99 $(ratio "${P99[$1]}" "${P99[sluiced]}")x"
  }
  if [ -n "$actions_pid" ]; then
    variantRatios sluiced-actions "Route actions (headers + rewrite + retries + 10% mirror) vs the plain 90/10 route:"
  fi
  if [ -n "$rl_pid" ]; then
    variantRatios sluiced-ratelimit "Local rate limit on (never limiting) vs off (target: costs under 3% of req/s):"
    rl_stats=$(curl -s "http://127.0.0.1:$RL_ADMIN_PORT/stats" | grep '^bench_local_rate_limit' | tr '\n' ' ')
    echo "- its counters: ${rl_stats:-none}"
  fi
  if [ -n "$grl_pid" ]; then
    variantRatios sluiced-globalrl "Global rate limit through Redis (never limiting) vs off (target: at least 70% of req/s):"
    grl_stats=$(curl -s "http://127.0.0.1:$GRL_ADMIN_PORT/stats" | grep '^ratelimit\.' | tr '\n' ' ')
    echo "- its counters: ${grl_stats:-none}"
  fi
  echo
  echo "Split (share of v1 over all measured runs, expect ~90%):"
  for t in "${targets[@]}"; do
    [ "$t" = direct ] && continue
    v1=$(sum "$t" 9); v2=$(sum "$t" 10)
    echo "- $t: v1 $v1, v2 $v2, v1 share $(awk -v a="$v1" -v b="$v2" 'BEGIN { if (a + b) printf "%.1f%%", 100 * a / (a + b); else print "n/a" }')"
  done
  if [ -n "$actions_pid" ]; then
    v1=$(sum sluiced-actions 9); v2=$(sum sluiced-actions 10); v3=$(sum sluiced-actions 13)
    echo "- sluiced-actions mirror: v3 $v3, $(awk -v m="$v3" -v n="$((v1 + v2))" 'BEGIN { if (n) printf "%.1f%%", 100 * m / n; else print "n/a" }') of the primary requests (expect ~10%)"
  fi
  errors=$(awk '$7 + $8 > 0 { printf "%s(non2xx=%d socket=%d) ", $1, $7, $8 }' "$work/results")
  echo
  echo "Errors: ${errors:-none (no non-2xx responses, no socket errors)}"
} | tee "$work/summary.md"
echo
cp "$work/summary.md" "$BUILD/bench-results.md"
echo "bench: wrote $BUILD/bench-results.md"
