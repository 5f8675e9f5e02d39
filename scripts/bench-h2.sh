#!/usr/bin/env bash
# The HTTP/2 section of `make bench`: h2load (HTTP/2 with prior knowledge,
# H2_CONNS connections x H2_STREAMS concurrent streams) through sluiced
# (1 worker, Gateway HTTP servers) and through HAProxy (1 thread, `proto
# h2`), two ways, interleaved round by round:
# - h2-h2: HTTP/2 on both sides, to nginx answering over h2c (the issue's
#   measure);
# - h2-h1: HTTP/2 in, keep-alive HTTP/1.1 out, to sluice-upstream;
# - h2-h2-rate: h2-h2 at a fixed offered load (H2_RATE req/s in all, h2load
#   --rps) that neither proxy saturates: the same work for both, so CPU per
#   request compares the proxies' cost alone, not who the shared load core
#   lets run faster.
# Reports medians of req/s and the proxy's CPU microseconds per request
# (/proc ticks), with the sluiced/HAProxy ratios against the targets
# (>= 1.3x req/s, <= 0.8x CPU per request). Writes
# BUILD/bench-h2-results.md. With two cores, h2load and the backend share
# one: when the rates come out alike, the load side is the limit and CPU
# per request is the measure that tells them apart.
# Env: ROUNDS (5), DURATION (5), H2_CONNS (10), H2_STREAMS (100), H2_RATE (30000), PROXY_CPU (0),
# LOAD_CPU (1).
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
. scripts/bench/lib.sh
H2_CONNS=${H2_CONNS:-10}
H2_STREAMS=${H2_STREAMS:-100}
H2_RATE=${H2_RATE:-30000}

for bin in sluiced sluice-upstream; do
  [ -x "$BUILD/$bin" ] || { echo "bench-h2: $BUILD/$bin missing" >&2; exit 1; }
done
for tool in haproxy h2load nginx; do
  command -v "$tool" >/dev/null || { echo "bench-h2: $tool missing (scripts/install-deps.sh)" >&2; exit 1; }
done
work=$(mktemp -d /tmp/sluice-bench-h2.XXXXXX)
pids=()
onExitStopAll

freePort BACKEND_H1
"${ON_LOAD[@]}" "$BUILD/sluice-upstream" --listen "127.0.0.1:$BACKEND_H1" --name b1 --threads 1 \
  >"$work/backend.log" 2>&1 & pids+=($!)
waitHttp "http://127.0.0.1:$BACKEND_H1/__counter"
freePort BACKEND_H2
mkdir -p "$work/nginx"
render scripts/bench/nginx-h2-backend.conf.in PREFIX="$work/nginx" BACKEND_PORT="$BACKEND_H2" > "$work/nginx.conf"
"${ON_LOAD[@]}" nginx -p "$work/nginx" -c "$work/nginx.conf" >"$work/nginx.log" 2>&1 & pids+=($!)

declare -A PORT PID
freePort S_H1; freePort S_H2; freePort S_OUT; freePort S_ADMIN
mkdir -p "$work/config"
render scripts/bench/h2.yaml.in BACKEND_H1="$BACKEND_H1" BACKEND_H2="$BACKEND_H2" PROXY_PORT_H1="$S_H1" \
  PROXY_PORT_H2="$S_H2" > "$work/config/bench.yaml"
"${ON_PROXY[@]}" "$BUILD/sluiced" --config-dir "$work/config" --outbound "127.0.0.1:$S_OUT" \
  --admin "127.0.0.1:$S_ADMIN" --workers 1 --bpf off --gateway-bind 127.0.0.1 >"$work/sluiced.log" 2>&1 &
pids+=($!); PID[sluiced]=$!; PORT[sluiced,h2-h1]=$S_H1; PORT[sluiced,h2-h2]=$S_H2; PORT[sluiced,h2-h2-rate]=$S_H2
waitHttp "http://127.0.0.1:$S_ADMIN/ready" 200 || { cat "$work/sluiced.log" >&2; exit 1; }

freePort H_H1; freePort H_H2
render scripts/bench/haproxy-h2.cfg.in PROXY_PORT_H1="$H_H1" PROXY_PORT_H2="$H_H2" BACKEND_H1="$BACKEND_H1" \
  BACKEND_H2="$BACKEND_H2" > "$work/haproxy.cfg"
"${ON_PROXY[@]}" haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 & pids+=($!)
PID[haproxy]=$!; PORT[haproxy,h2-h1]=$H_H1; PORT[haproxy,h2-h2]=$H_H2; PORT[haproxy,h2-h2-rate]=$H_H2

targets=(sluiced haproxy)
modes=(h2-h2 h2-h1 h2-h2-rate)
for t in "${targets[@]}"; do
  for m in "${modes[@]}"; do
    for _ in $(seq 100); do
      code=$(curl -s --http2-prior-knowledge -o /dev/null -w '%{http_code}' --max-time 1 \
        "http://127.0.0.1:${PORT[$t,$m]}/" || true)
      [ "$code" = 200 ] && break
      sleep 0.1
    done
    [ "$code" = 200 ] || { echo "bench-h2: $t ($m) never answered over HTTP/2" >&2; cat "$work/$t.log" >&2; exit 1; }
  done
done

h2loadRun() {  # target mode seconds
  local rate=()
  [ "$2" = h2-h2-rate ] && rate=(--rps "$((H2_RATE / H2_CONNS))")
  "${ON_LOAD[@]}" h2load -c "$H2_CONNS" -m "$H2_STREAMS" "${rate[@]}" -D "$3" "http://127.0.0.1:${PORT[$1,$2]}/" &
  wrk_pid=$!
  wait "$wrk_pid"
}
# "rps requests succeeded failed mean_ms" from an h2load report.
parseH2load() {
  awk '
    /^finished in/ { rps = $4 }
    /^requests:/ { total = $2; ok = $8; failed = $10 }
    /^time for request:/ { mean = $6 }
    END { printf "%s %s %s %s %s\n", rps, total, ok, failed, mean }'
}
for t in "${targets[@]}"; do for m in "${modes[@]}"; do h2loadRun "$t" "$m" 1 >/dev/null; done; done

TICK_US=$((1000000 / $(getconf CLK_TCK)))
: > "$work/results"
for round in $(seq "$ROUNDS"); do
  for m in "${modes[@]}"; do
    for i in 0 1; do
      t=${targets[$(((i + round) % 2))]}  # who goes first alternates
      read -r u0 s0 < <(cpuTicks $(withChildren "${PID[$t]}"))
      h2loadRun "$t" "$m" "$DURATION" > "$work/h2load.out"
      read -r u1 s1 < <(cpuTicks $(withChildren "${PID[$t]}"))
      read -r rps total ok failed mean < <(parseH2load < "$work/h2load.out")
      if [ -z "$ok" ] || [ "$ok" -eq 0 ] || [ "$failed" != 0 ]; then
        echo "bench-h2: $t $m round $round failed:" >&2; cat "$work/h2load.out" >&2; exit 1
      fi
      cpu=$(awk -v d=$((u1 + s1 - u0 - s0)) -v tick="$TICK_US" -v n="$ok" 'BEGIN { printf "%.3f", d * tick / n }')
      echo "$t $m $rps $cpu $mean" >> "$work/results"
      printf 'bench-h2: round %d %-6s %-8s %9.0f req/s  mean %8s  cpu %7.2f us/req\n' "$round" "$m" "$t" "$rps" \
        "$mean" "$cpu"
    done
  done
done

col() { awk -v t="$1" -v m="$2" -v c="$3" '$1 == t && $2 == m { print $c }' "$work/results" | while read -r v; do toMs "$v"; echo; done | median; }
num() { awk -v t="$1" -v m="$2" -v c="$3" '$1 == t && $2 == m { print $c }' "$work/results" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "nan"; else printf "%.3f", a / b }'; }
{
  echo "## sluice HTTP/2 bench: ${ROUNDS} rounds x ${DURATION}s, h2load -c${H2_CONNS} -m${H2_STREAMS}, medians"
  echo
  echo "sluiced (1 worker) and HAProxy $(haproxy -v | awk 'NR==1 {print $3}') (nbthread 1) on CPU $PROXY_CPU, h2c from"
  echo "h2load; behind them nginx over h2c (h2-h2) or sluice-upstream over HTTP/1.1 (h2-h1), on CPU $LOAD_CPU"
  echo "with h2load. $(date -u +%FT%TZ)."
  echo
  echo "| load | proxy | req/s | CPU us/req | mean latency |"
  echo "|---|---|---:|---:|---:|"
  for m in "${modes[@]}"; do
    for t in "${targets[@]}"; do
      printf '| %s | %s | %.0f | %.2f | %s ms |\n' "$m" "$t" "$(num "$t" "$m" 3)" "$(num "$t" "$m" 4)" "$(col "$t" "$m" 5)"
    done
  done
  echo
  for m in h2-h2 h2-h1; do
    echo "- $m req/s, sluiced/HAProxy: $(ratio "$(num sluiced "$m" 3)" "$(num haproxy "$m" 3)")x (target >= 1.3)"
    echo "- $m CPU per request, sluiced/HAProxy: $(ratio "$(num sluiced "$m" 4)" "$(num haproxy "$m" 4)")x (target <= 0.8)"
  done
  echo "- h2-h2 at ${H2_RATE} req/s offered, CPU per request, sluiced/HAProxy:" \
    "$(ratio "$(num sluiced h2-h2-rate 4)" "$(num haproxy h2-h2-rate 4)")x (target <= 0.8)"
} | tee "$work/summary.md"
cp "$work/summary.md" "$BUILD/bench-h2-results.md"
echo "bench-h2: wrote $BUILD/bench-h2-results.md"
