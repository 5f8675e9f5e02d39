#!/usr/bin/env bash
# The load-balancing section of `make bench`: the same sluiced (1 worker,
# CPU PROXY_CPU) three times over the same two backends (CPU LOAD_CPU, with
# wrk), one per policy: ROUND_ROBIN, LEAST_REQUEST, and consistentHash
# (ring hash on a header wrk sends). Every DestinationRule also carries
# connectionPool limits (high enough never to trip), so the circuit-breaker
# accounting is on the measured path. Interleaved rounds of wrk -t1 -c$CONNS;
# medians of req/s and sluiced CPU per request, and the ratios to
# ROUND_ROBIN (target: LEAST_REQUEST and ring hash within 5%).
# Env: ROUNDS (5), DURATION (5), CONNS (32), PROXY_CPU (0), LOAD_CPU (1).
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
. scripts/bench/lib.sh

# ROUNDS, DURATION, CONNS, PROXY_CPU, LOAD_CPU, NICE, ON_PROXY, ON_LOAD: lib.sh

for bin in sluiced sluice-upstream; do
  [ -x "$BUILD/$bin" ] || { echo "bench-lb: $BUILD/$bin missing" >&2; exit 1; }
done
work=$(mktemp -d /tmp/sluice-bench-lb.XXXXXX)
pids=()
onExitStopAll

freePort V1_PORT; freePort V2_PORT
"${ON_LOAD[@]}" "$BUILD/sluice-upstream" --listen "127.0.0.1:$V1_PORT" --name v1 --threads 1 \
  >"$work/v1.log" 2>&1 & pids+=($!)
"${ON_LOAD[@]}" "$BUILD/sluice-upstream" --listen "127.0.0.1:$V2_PORT" --name v2 --threads 1 \
  >"$work/v2.log" 2>&1 & pids+=($!)
waitHttp "http://127.0.0.1:$V1_PORT/__counter"; waitHttp "http://127.0.0.1:$V2_PORT/__counter"

targets=(round-robin least-request ring-hash)
declare -A LB PORT PID
LB[round-robin]='{simple: ROUND_ROBIN}'
LB[least-request]='{simple: LEAST_REQUEST}'
LB[ring-hash]='{consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 1024}}}'
for t in "${targets[@]}"; do
  freePort T_PORT; freePort T_ADMIN
  mkdir -p "$work/$t"
  render scripts/bench/lb.yaml.in V1_PORT="$V1_PORT" V2_PORT="$V2_PORT" LB="${LB[$t]}" > "$work/$t/reviews.yaml"
  "${ON_PROXY[@]}" "$BUILD/sluiced" --config-dir "$work/$t" --outbound "127.0.0.1:$T_PORT" \
    --admin "127.0.0.1:$T_ADMIN" --workers 1 --bpf off >"$work/$t.log" 2>&1 & pids+=($!)
  PID[$t]=$!; PORT[$t]=$T_PORT
  waitHttp "http://127.0.0.1:$T_ADMIN/ready" 200 || { cat "$work/$t.log" >&2; exit 1; }
done

wrkRun() {  # target seconds
  "${ON_LOAD[@]}" wrk -t1 -c"$CONNS" -d"$2"s --latency -H 'Host: reviews:9080' -H 'x-user: alice' \
    "http://127.0.0.1:${PORT[$1]}/reviews/1" &
  wrk_pid=$!
  wait "$wrk_pid"
}
for t in "${targets[@]}"; do wrkRun "$t" 1 >/dev/null; done

TICK_US=$((1000000 / $(getconf CLK_TCK)))
: > "$work/results"
for round in $(seq "$ROUNDS"); do
  for i in 0 1 2; do
    t=${targets[$(((i + round - 1) % 3))]}
    read -r u0 s0 < <(cpuTicks "${PID[$t]}")
    wrkRun "$t" "$DURATION" > "$work/wrk.out"
    read -r u1 s1 < <(cpuTicks "${PID[$t]}")
    read -r rps p50 p99 reqs non2xx errs < <(parseWrk < "$work/wrk.out")
    if [ -z "$reqs" ] || [ "$reqs" -eq 0 ] || [ "$non2xx$errs" != 00 ]; then
      echo "bench-lb: $t round $round failed:" >&2; cat "$work/wrk.out" >&2; exit 1
    fi
    cpu=$(awk -v d=$((u1 + s1 - u0 - s0)) -v tick="$TICK_US" -v n="$reqs" 'BEGIN { printf "%.3f", d * tick / n }')
    echo "$t $rps $cpu" >> "$work/results"
    printf 'bench-lb: round %d %-14s %9.0f req/s  p99 %8s  sluiced cpu %6.2f us/req\n' "$round" "$t" "$rps" "$p99" "$cpu"
  done
done

col() { awk -v t="$1" -v c="$2" '$1 == t { print $c }' "$work/results" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "nan"; else printf "%.3f", a / b }'; }
{
  echo "## sluice load-balancing bench: ${ROUNDS} rounds x ${DURATION}s, wrk -t1 -c${CONNS}, medians"
  echo
  echo "Same sluiced (1 worker, CPU $PROXY_CPU), same two backends; connectionPool limits on (never tripped). $(date -u +%FT%TZ)."
  echo
  echo "| policy | req/s | sluiced CPU us/req | req/s vs ROUND_ROBIN |"
  echo "|---|---:|---:|---:|"
  for t in "${targets[@]}"; do
    printf '| %s | %.0f | %.2f | %s |\n' "$t" "$(col "$t" 2)" "$(col "$t" 3)" "$(ratio "$(col "$t" 2)" "$(col round-robin 2)")"
  done
  echo
  for t in least-request ring-hash; do
    r=$(ratio "$(col "$t" 2)" "$(col round-robin 2)")
    echo "- target $t within 5% of ROUND_ROBIN: $(awk -v r="$r" 'BEGIN { print (r >= 0.95) ? "met" : "NOT met" }') (${r}x)"
  done
} | tee "$work/summary.md"
cp "$work/summary.md" "$BUILD/bench-lb-results.md"
echo "bench-lb: wrote $BUILD/bench-lb-results.md"
