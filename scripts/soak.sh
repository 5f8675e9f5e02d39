#!/usr/bin/env bash
# Soak: MINUTES (default 10) of mixed traffic through one sluiced while its
# configuration is rewritten every few seconds and an upstream is killed and
# restarted, then a summary table (also BUILD/soak-results.md). Passes
# (exit 0) when no request that Istio's semantics say must succeed failed,
# and the daemon's RSS and open descriptors in the last minute are within
# 10% of minute 1 (medians of the 5 s samples in each). `make test` runs it for 60 s (SOAK_TEST_SECONDS); `make soak`
# for 10 minutes.
#
# Traffic, all on 127.0.0.1, each loop bounded by the deadline:
# - wrk, keep-alive, 8 connections: GET /steady (must all be 2xx);
# - new connections, one chunked POST each (curl; must be 200 with the body
#   echoed in full);
# - abandoned requests: curl gives up after 50 ms on a 1 s answer (the
#   daemon cancels them; not counted as losses);
# - fault aborts on /chaos (503 expected; counted apart);
# and the route carries retries (connect-failure, reset, 5xx), a 10% mirror
# and a 1% 20 ms fault delay. Every 5 s the weights flip (atomic rename);
# every 20 s one of subset v2's two upstreams is SIGKILLed and restarted 2 s
# later: a retry goes to the other host of the subset (Istio's default
# previous-hosts predicate), so no request may fail. (A subset whose only
# host is down fails its requests by Istio's own semantics: retries do not
# leave the route's destination.) RSS and descriptors are sampled every 5 s.
#
# Usage: scripts/soak.sh [BUILD]   Env: MINUTES (10), SECONDS_TOTAL (overrides).
set -uo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
. scripts/bench/lib.sh
TOTAL=${SECONDS_TOTAL:-$(( ${MINUTES:-10} * 60 ))}

for tool in wrk curl; do
  command -v "$tool" >/dev/null || { echo "soak: $tool missing (run scripts/install-deps.sh)" >&2; exit 1; }
done
for bin in sluiced sluice-upstream; do
  [ -x "$BUILD/$bin" ] || { echo "soak: $BUILD/$bin missing (make)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/sluice-soak.XXXXXX)
pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}" ${v2_pid:-}; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}" ${v2_pid:-}; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "soak: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

freePort V1_PORT; freePort V2_PORT; freePort V2B_PORT; freePort V3_PORT; freePort PORT; freePort ADMIN
startV2() {
  "$BUILD/sluice-upstream" --listen "127.0.0.1:$V2_PORT" --name v2 --threads 1 2>>"$work/v2.log" &
  v2_pid=$!
}
"$BUILD/sluice-upstream" --listen "127.0.0.1:$V2B_PORT" --name v2b --threads 1 2>"$work/v2b.log" & pids+=($!)
"$BUILD/sluice-upstream" --listen "127.0.0.1:$V1_PORT" --name v1 --threads 1 2>"$work/v1.log" & pids+=($!)
"$BUILD/sluice-upstream" --listen "127.0.0.1:$V3_PORT" --name v3 --threads 1 2>"$work/v3.log" & pids+=($!)
startV2
for p in "$V1_PORT" "$V2_PORT" "$V2B_PORT" "$V3_PORT"; do waitHttp "http://127.0.0.1:$p/__counter"; done

mkdir -p "$work/config"
config() {  # weight of v1 (v2 gets the rest)
  cat <<EOF
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: soak}
spec:
  hosts: [soak.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: $V1_PORT}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {http: $V2_PORT}, labels: {version: v2}}
  - {address: 127.0.0.1, ports: {http: $V2B_PORT}, labels: {version: v2}}
  - {address: 127.0.0.1, ports: {http: $V3_PORT}, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: soak}
spec:
  host: soak
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}, {name: v3, labels: {version: v3}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: soak}
spec:
  hosts: [soak]
  http:
  - match: [{uri: {prefix: /chaos}}]
    fault: {abort: {percentage: {value: 100}, httpStatus: 503}}
    route: [{destination: {host: soak, subset: v1}}]
  - fault: {delay: {percentage: {value: 1}, fixedDelay: 20ms}}
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "connect-failure,reset,5xx,refused-stream"}
    mirror: {host: soak, subset: v3}
    mirrorPercentage: {value: 10}
    route:
    - {destination: {host: soak, subset: v1}, weight: $1}
    - {destination: {host: soak, subset: v2}, weight: $((100 - $1))}
EOF
}
config 50 > "$work/config/soak.yaml"
"$BUILD/sluiced" --config-dir "$work/config" --outbound "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN" \
  --workers 2 --bpf off >"$work/sluiced.log" 2>&1 & pids+=($!)
daemon=$!
waitHttp "http://127.0.0.1:$ADMIN/ready" 200 || { cat "$work/sluiced.log" >&2; exit 1; }
URL="http://127.0.0.1:$PORT"
HOST='Host: soak:9080'
deadline=$(( $(date +%s) + TOTAL ))
echo "soak: ${TOTAL}s against pid $daemon (log $work/sluiced.log while it runs)"

# --- load
wrk -t1 -c8 -d"${TOTAL}s" --latency -H "$HOST" "$URL/steady" > "$work/wrk.out" 2>&1 &
wrk_pid=$!; pids+=($wrk_pid)
head -c 20000 /dev/urandom | base64 -w0 > "$work/body"
bodyLen=$(stat -c %s "$work/body")
(
  ok=0; bad=0
  while [ "$(date +%s)" -lt "$deadline" ]; do
    got=$(curl -s -o "$work/post.out" -w '%{http_code}' -H "$HOST" -H 'Transfer-Encoding: chunked' \
      --data-binary @"$work/body" --max-time 10 "$URL/post" || true)
    if [ "$got" = 200 ] && grep -q "\"body_bytes\":$bodyLen" "$work/post.out"; then ok=$((ok + 1)); else bad=$((bad + 1)); echo "$got" >> "$work/post.bad"; fi
    echo "$ok $bad" > "$work/post.count"
  done
) & pids+=($!)
(
  n=0
  while [ "$(date +%s)" -lt "$deadline" ]; do
    curl -s -o /dev/null -H "$HOST" --max-time 0.05 "$URL/abandon?delay=1s" || true
    n=$((n + 1)); echo "$n" > "$work/abandon.count"
    sleep 0.05
  done
) & pids+=($!)
(
  ok=0; other=0
  while [ "$(date +%s)" -lt "$deadline" ]; do
    got=$(curl -s -o /dev/null -w '%{http_code}' -H "$HOST" --max-time 5 "$URL/chaos" || true)
    if [ "$got" = 503 ]; then ok=$((ok + 1)); else other=$((other + 1)); fi
    echo "$ok $other" > "$work/chaos.count"
    sleep 0.1
  done
) & pids+=($!)

# --- churn and samples
: > "$work/samples"  # t rss_kib fds
reloads=0; kills=0; weight=50; next_reload=5; next_kill=20
start=$(date +%s)
while :; do
  now=$(date +%s); t=$((now - start))
  [ "$now" -ge "$deadline" ] && break
  if [ "$t" -ge "$next_reload" ]; then
    weight=$(( weight == 80 ? 20 : 80 ))  # a real change each time: an unchanged file is not a new version
    config "$weight" > "$work/config/.soak.yaml.tmp" && mv "$work/config/.soak.yaml.tmp" "$work/config/soak.yaml"
    reloads=$((reloads + 1)); next_reload=$((t + 5))
  fi
  if [ "$t" -ge "$next_kill" ]; then
    kill -9 "$v2_pid" 2>/dev/null; wait "$v2_pid" 2>/dev/null
    sleep 2
    startV2; kills=$((kills + 1)); next_kill=$((t + 20))
  fi
  if [ $((t % 5)) = 0 ]; then
    rss=$(rssKib "$daemon"); fds=$(ls "/proc/$daemon/fd" 2>/dev/null | wc -l)
    echo "$t $rss $fds" >> "$work/samples"
  fi
  kill -0 "$daemon" 2>/dev/null || { echo "soak: sluiced exited" >&2; tail -30 "$work/sluiced.log" >&2; exit 1; }
  sleep 1
done
wait "$wrk_pid" 2>/dev/null
sleep 2  # the curl loops end at the deadline too

read -r _ _ _ wreqs non2xx werrs < <(parseWrk < "$work/wrk.out")
read -r post_ok post_bad < "$work/post.count"
read -r chaos_ok chaos_other < "$work/chaos.count"
abandoned=$(cat "$work/abandon.count" 2>/dev/null || echo 0)
stats=$(curl -s "http://127.0.0.1:$ADMIN/stats")
stat() { echo "$stats" | awk -F': ' -v k="$1" '$1 == k { print $2 }'; }
# Minute 1 against the last minute (for a run shorter than 3 minutes, its
# second third against its last third: the first seconds are warm-up,
# arenas and buffers growing). Medians of the samples in each window: one
# sample catches however many requests happen to be in flight.
win=$(( TOTAL / 3 < 60 ? TOTAL / 3 : 60 ))
windowMedian() {  # from to column
  awk -v a="$1" -v b="$2" -v c="$3" '$1 >= a && $1 < b { print $c }' "$work/samples" | median | awk '{ printf "%.0f", $1 }'
}
t1="$win-$((2 * win))"; tN="$((TOTAL - win))-$TOTAL"
rss1=$(windowMedian "$win" $((2 * win)) 2); fds1=$(windowMedian "$win" $((2 * win)) 3)
rssN=$(windowMedian $((TOTAL - win)) $((TOTAL + 1)) 2); fdsN=$(windowMedian $((TOTAL - win)) $((TOTAL + 1)) 3)
within() { awk -v a="$1" -v b="$2" 'BEGIN { d = (b - a) / a; if (d < 0) d = -d; print (d <= 0.10) ? "yes" : "NO" }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f%%", 100 * (b - a) / a }'; }
lost=$((non2xx + werrs + post_bad))
{
  echo "## sluice soak: ${TOTAL}s, 2 workers, $(date -u +%FT%TZ), $(uname -r)"
  echo
  echo "| what | count |"
  echo "|---|---:|"
  echo "| keep-alive GETs (wrk -c8) | $wreqs |"
  echo "| ... non-2xx / socket errors (lost) | $non2xx / $werrs |"
  echo "| chunked POSTs on new connections, echoed in full | $post_ok |"
  echo "| ... failed (lost) | $post_bad |"
  echo "| abandoned requests (client left after 50 ms) | $abandoned |"
  echo "| fault aborts answered 503 / otherwise | $chaos_ok / $chaos_other |"
  echo "| config reloads / upstream kills | $reloads / $kills |"
  echo "| retries / mirrors / DC cancellations | $(stat upstream_rq_retry) / $(stat shadow_rq_total) / $(stat downstream_cx_destroy_remote_active_rq) |"
  echo "| config version at the end | $(curl -s "http://127.0.0.1:$ADMIN/config_dump" | awk -F': ' '/^  "version"/ { gsub(/,/, "", $2); print $2; exit }') |"
  echo
  echo "| daemon (median of 5 s samples) | ${t1} s | ${tN} s | change | within 10% |"
  echo "|---|---:|---:|---:|---|"
  echo "| RSS KiB | $rss1 | $rssN | $(pct "$rss1" "$rssN") | $(within "$rss1" "$rssN") |"
  echo "| open descriptors | $fds1 | $fdsN | $(pct "$fds1" "$fdsN") | $(within "$fds1" "$fdsN") |"
  echo
  echo "Lost: $lost"
} | tee "$work/summary.md"
cp "$work/summary.md" "$BUILD/soak-results.md"
[ "$lost" = 0 ] && [ "$chaos_other" = 0 ] && [ "$(within "$rss1" "$rssN")" = yes ] && \
  [ "$(within "$fds1" "$fdsN")" = yes ]
