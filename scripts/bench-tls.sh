#!/usr/bin/env bash
# The HTTPS section of `make bench`: sluiced (1 worker, an HTTPS Gateway
# server) against HAProxy (1 thread) with the same ECDSA P-256 certificate,
# TLS 1.3 only, in front of the same sluice-upstream backend. Two loads,
# interleaved round by round:
# - keepalive: wrk -t1 -c$CONNS over kept-alive TLS connections (req/s);
# - handshake: wrk -t1 -c$CONNS with `Connection: close`, so every request
#   is a new connection and a full handshake (wrk sets no session on a new
#   connection: no resumption); req/s = handshakes/s.
# Reports medians of req/s and the proxy's CPU microseconds per request
# (/proc ticks), the sluiced/HAProxy ratios against the targets (>= 1.2x
# on both rates, CPU per handshake <= 0.85x), and sluiced's RSS growth per
# idle TLS connection (connections opened with openssl s_client, target
# <= 48 KiB). Writes BUILD/bench-tls-results.md. With two cores, wrk and
# the backend share one: when both proxies' rates come out alike, the load
# side is the limit and CPU per request is the measure that tells them apart.
# Env: ROUNDS (5), DURATION (5), CONNS (32), PROXY_CPU (0), LOAD_CPU (1), IDLE (300).
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
. scripts/bench/lib.sh
IDLE=${IDLE:-300}

for bin in sluiced sluice-upstream; do
  [ -x "$BUILD/$bin" ] || { echo "bench-tls: $BUILD/$bin missing" >&2; exit 1; }
done
command -v haproxy >/dev/null || { echo "bench-tls: haproxy missing (scripts/install-deps.sh)" >&2; exit 1; }
work=$(mktemp -d /tmp/sluice-bench-tls.XXXXXX)
pids=()
onExitStopAll

# One self-signed ECDSA P-256 certificate for both proxies.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" > "$work/haproxy.pem"

freePort BACKEND_PORT
"${ON_LOAD[@]}" "$BUILD/sluice-upstream" --listen "127.0.0.1:$BACKEND_PORT" --name b1 --threads 1 \
  >"$work/backend.log" 2>&1 & pids+=($!)
waitHttp "http://127.0.0.1:$BACKEND_PORT/__counter"

declare -A PORT PID
freePort S_PORT; freePort S_OUT; freePort S_ADMIN
mkdir -p "$work/config"
render scripts/bench/tls.yaml.in BACKEND_PORT="$BACKEND_PORT" PROXY_PORT="$S_PORT" \
  CERT="$work/cert.pem" KEY="$work/key.pem" > "$work/config/bench.yaml"
"${ON_PROXY[@]}" "$BUILD/sluiced" --config-dir "$work/config" --outbound "127.0.0.1:$S_OUT" \
  --admin "127.0.0.1:$S_ADMIN" --workers 1 --bpf off --gateway-bind 127.0.0.1 >"$work/sluiced.log" 2>&1 &
pids+=($!); PID[sluiced]=$!; PORT[sluiced]=$S_PORT
waitHttp "http://127.0.0.1:$S_ADMIN/ready" 200 || { cat "$work/sluiced.log" >&2; exit 1; }

freePort H_PORT
render scripts/bench/haproxy-tls.cfg.in PROXY_PORT="$H_PORT" BACKEND_PORT="$BACKEND_PORT" \
  PEM="$work/haproxy.pem" > "$work/haproxy.cfg"
"${ON_PROXY[@]}" haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 & pids+=($!)
PID[haproxy]=$!; PORT[haproxy]=$H_PORT

for t in sluiced haproxy; do
  for _ in $(seq 100); do
    code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 1 --resolve "bench.test:${PORT[$t]}:127.0.0.1" \
      "https://bench.test:${PORT[$t]}/" || true)
    [ "$code" = 200 ] && break
    sleep 0.1
  done
  [ "$code" = 200 ] || { echo "bench-tls: $t never answered over TLS" >&2; cat "$work/$t.log" >&2; exit 1; }
done

wrkRun() {  # target mode seconds
  local extra=()
  [ "$2" = handshake ] && extra=(-H 'Connection: close')
  "${ON_LOAD[@]}" wrk -t1 -c"$CONNS" -d"$3"s --latency "${extra[@]}" "https://127.0.0.1:${PORT[$1]}/" &
  wrk_pid=$!
  wait "$wrk_pid"
}
targets=(sluiced haproxy)
modes=(keepalive handshake)
for t in "${targets[@]}"; do for m in "${modes[@]}"; do wrkRun "$t" "$m" 1 >/dev/null; done; done

TICK_US=$((1000000 / $(getconf CLK_TCK)))
: > "$work/results"
for round in $(seq "$ROUNDS"); do
  for m in "${modes[@]}"; do
    for i in 0 1; do
      t=${targets[$(((i + round) % 2))]}  # who goes first alternates
      read -r u0 s0 < <(cpuTicks $(withChildren "${PID[$t]}"))
      wrkRun "$t" "$m" "$DURATION" > "$work/wrk.out"
      read -r u1 s1 < <(cpuTicks $(withChildren "${PID[$t]}"))
      read -r rps p50 p99 reqs non2xx errs < <(parseWrk < "$work/wrk.out")
      if [ -z "$reqs" ] || [ "$reqs" -eq 0 ] || [ "$non2xx" != 0 ]; then
        echo "bench-tls: $t $m round $round failed:" >&2; cat "$work/wrk.out" >&2; exit 1
      fi
      cpu=$(awk -v d=$((u1 + s1 - u0 - s0)) -v tick="$TICK_US" -v n="$reqs" 'BEGIN { printf "%.3f", d * tick / n }')
      echo "$t $m $rps $cpu $p99 $errs" >> "$work/results"
      printf 'bench-tls: round %d %-9s %-8s %9.0f req/s  p99 %8s  cpu %7.2f us/req  socket errors %d\n' \
        "$round" "$m" "$t" "$rps" "$p99" "$cpu" "$errs"
    done
  done
done

# Idle TLS connections: sluiced's RSS with IDLE, then 2 x IDLE handshaken
# connections that send nothing; the growth over the second IDLE is the
# cost of one (the first batch may only use heap the load runs left free).
openIdle() {
  for _ in $(seq "$IDLE"); do
    # -ign_eof: the connection stays open after stdin's end.
    openssl s_client -quiet -ign_eof -connect "127.0.0.1:${PORT[sluiced]}" -servername bench.test \
      </dev/null >/dev/null 2>&1 &
    idle+=($!)
  done
  for _ in $(seq 100); do
    [ "$(ss -Htn state established "( sport = :${PORT[sluiced]} )" | wc -l)" -ge "${#idle[@]}" ] && break
    sleep 0.1
  done
  sleep 1
}
idle=()
openIdle; rss1=$(rssKib "${PID[sluiced]}"); open1=$(ss -Htn state established "( sport = :${PORT[sluiced]} )" | wc -l)
openIdle; rss2=$(rssKib "${PID[sluiced]}"); open2=$(ss -Htn state established "( sport = :${PORT[sluiced]} )" | wc -l)
for pid in "${idle[@]}"; do kill "$pid" 2>/dev/null || true; done
for pid in "${idle[@]}"; do wait "$pid" 2>/dev/null || true; done
perConn=$(awk -v a="$rss1" -v b="$rss2" -v n=$((open2 - open1)) 'BEGIN { if (n <= 0) print "nan"; else printf "%.1f", (b - a) / n }')

col() { awk -v t="$1" -v m="$2" -v c="$3" '$1 == t && $2 == m { print $c }' "$work/results" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "nan"; else printf "%.3f", a / b }'; }
{
  echo "## sluice HTTPS bench: ${ROUNDS} rounds x ${DURATION}s, wrk -t1 -c${CONNS}, medians"
  echo
  echo "sluiced (1 worker) and HAProxy $(haproxy -v | awk 'NR==1 {print $3}') (nbthread 1) on CPU $PROXY_CPU, same ECDSA P-256"
  echo "certificate, TLS 1.3, one sluice-upstream backend; wrk and the backend on CPU $LOAD_CPU. $(date -u +%FT%TZ)."
  echo
  echo "| load | proxy | req/s | CPU us/req | p99 |"
  echo "|---|---|---:|---:|---:|"
  for m in "${modes[@]}"; do
    for t in "${targets[@]}"; do
      printf '| %s | %s | %.0f | %.1f | %s ms |\n' "$m" "$t" "$(col "$t" "$m" 3)" "$(col "$t" "$m" 4)" \
        "$(awk -v t="$t" -v m="$m" '$1 == t && $2 == m { print $5 }' "$work/results" | while read -r v; do toMs "$v"; echo; done | median)"
    done
  done
  echo
  ka=$(ratio "$(col sluiced keepalive 3)" "$(col haproxy keepalive 3)")
  hs=$(ratio "$(col sluiced handshake 3)" "$(col haproxy handshake 3)")
  hc=$(ratio "$(col sluiced handshake 4)" "$(col haproxy handshake 4)")
  echo "- keep-alive HTTPS req/s, sluiced/HAProxy: ${ka}x (target >= 1.2)"
  echo "- new handshakes/s, sluiced/HAProxy: ${hs}x (target >= 1.2)"
  echo "- CPU per handshake, sluiced/HAProxy: ${hc}x (target <= 0.85)"
  echo "- sluiced RSS per idle TLS connection: ${perConn} KiB (RSS ${rss1} KiB with $open1 connections, ${rss2} KiB with $open2; target <= 48)"
} | tee "$work/summary.md"
cp "$work/summary.md" "$BUILD/bench-tls-results.md"
echo "bench-tls: wrote $BUILD/bench-tls-results.md"
