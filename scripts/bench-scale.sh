#!/usr/bin/env bash
# `make bench-scale` (also the last section of `make bench`): a mesh of
# SERVICES services (default 10000), each its own file as a ConfigMap key
# would be: a ServiceEntry with two endpoints on one local backend, a
# DestinationRule with subsets v1/v2 and a 90/10 VirtualService. Measures
# what issue 21 targets:
#   - ready time: sluiced started until /ready;
#   - RSS 1 s after ready, and 1 s after each of RELOADS one-file changes
#     went live;
#   - reload latency: one VirtualService file rewritten (its response header
#     x-rev set to the round number) until a request to that service
#     answers with the new x-rev.
# One worker, explicit proxy mode, no eBPF. Loopback only; the service VIPs
# (127.20.x.y) appear only in the config. Prints a table and writes
# BUILD/bench-scale-results.md (REGISTRY=kubernetes: ...-kubernetes.md).
#
# REGISTRY=kubernetes describes each service as a cluster would: a Service,
# an EndpointSlice with three ready pods (127.0.0.1-3, one backend on each)
# and those three Pods, in place of the ServiceEntry.
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
. scripts/bench/lib.sh

SERVICES=${SERVICES:-10000}
RELOADS=${RELOADS:-20}
REGISTRY=${REGISTRY:-serviceentry}
case $REGISTRY in serviceentry|kubernetes) ;; *) echo "bench-scale: REGISTRY is serviceentry or kubernetes" >&2; exit 1 ;; esac
for bin in sluiced sluice-upstream; do
  [ -x "$BUILD/$bin" ] || { echo "bench-scale: $BUILD/$bin missing" >&2; exit 1; }
done
[ "$SERVICES" -ge 1 ] && [ "$SERVICES" -le 60000 ] || { echo "bench-scale: SERVICES 1..60000" >&2; exit 1; }

work=$(mktemp -d /tmp/sluice-bench-scale.XXXXXX)
pids=()
onExitStopAll

freePort backendPort; freePort proxyPort; freePort adminPort
"$BUILD/sluice-upstream" --listen "127.0.0.1:$backendPort" --name scale --threads 1 2>"$work/upstream.log" &
pids+=($!)
waitHttp "http://127.0.0.1:$backendPort/__counter"
if [ "$REGISTRY" = kubernetes ]; then
  for ip in 127.0.0.2 127.0.0.3; do
    "$BUILD/sluice-upstream" --listen "$ip:$backendPort" --name "scale-$ip" --threads 1 2>>"$work/upstream.log" &
    pids+=($!)
    waitHttp "http://$ip:$backendPort/__counter"
  done
fi

# registryDocs I: service I as a ServiceEntry, or as a Kubernetes Service,
# its EndpointSlice and its Pods.
registryDocs() {
  local i=$1 a=$(( $1 / 250 )) b=$(( $1 % 250 + 1 ))
  if [ "$REGISTRY" = serviceentry ]; then
    cat <<EOF
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc$i, namespace: default}
spec:
  hosts: [svc$i.default.svc.cluster.local]
  addresses: [127.20.$a.$b]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: $backendPort}, labels: {version: v1}}
  - {address: 127.0.0.2, ports: {http: $backendPort}, labels: {version: v2}}
EOF
    return
  fi
  cat <<EOF
apiVersion: v1
kind: Service
metadata: {name: svc$i, namespace: default, labels: {app: svc$i}}
spec:
  clusterIP: 127.20.$a.$b
  ports: [{name: http, port: 80, protocol: TCP, targetPort: $backendPort}]
  selector: {app: svc$i}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc$i-x1, namespace: default, labels: {kubernetes.io/service-name: svc$i}}
addressType: IPv4
ports: [{name: http, port: $backendPort, protocol: TCP}]
endpoints:
- {addresses: [127.0.0.1], conditions: {ready: true}, targetRef: {kind: Pod, name: svc$i-a}}
- {addresses: [127.0.0.2], conditions: {ready: true}, targetRef: {kind: Pod, name: svc$i-b}}
- {addresses: [127.0.0.3], conditions: {ready: true}, targetRef: {kind: Pod, name: svc$i-c}}
EOF
  local pod ip ver
  for pod in a:1:v1 b:2:v1 c:3:v2; do
    IFS=: read -r pod ip ver <<<"$pod"
    cat <<EOF
---
apiVersion: v1
kind: Pod
metadata: {name: svc$i-$pod, namespace: default, labels: {app: svc$i, version: $ver}}
spec: {nodeName: node-a}
status: {phase: Running, podIP: 127.0.0.$ip, podIPs: [{ip: 127.0.0.$ip}]}
EOF
  done
}

# svcFile I REV: service I's resources; REV goes into the route's x-rev.
svcFile() {
  local i=$1 rev=$2
  registryDocs "$i"
  cat <<EOF
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc$i, namespace: default}
spec:
  host: svc$i
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc$i, namespace: default}
spec:
  hosts: [svc$i]
  http:
  - headers: {response: {set: {x-rev: "$rev"}}}
    route:
    - {destination: {host: svc$i, subset: v1}, weight: 90}
    - {destination: {host: svc$i, subset: v2}, weight: 10}
EOF
}

mkdir -p "$work/config"
for ((i = 0; i < SERVICES; i++)); do svcFile "$i" 0 > "$work/config/svc$i.yaml"; done

rssKiB() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
nowMs() { date +%s%3N; }

start=$(nowMs)
"$BUILD/sluiced" --config-dir "$work/config" --outbound "127.0.0.1:$proxyPort" --admin "127.0.0.1:$adminPort" \
  --workers 1 --bpf off >"$work/sluiced.log" 2>&1 &
pid=$!; pids+=($pid)
ready=
for _ in $(seq 600); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$adminPort/ready" || true)" = 200 ]; then
    ready=$(( $(nowMs) - start )); break
  fi
  sleep 0.05
done
[ -n "$ready" ] || { echo "bench-scale: sluiced not ready in 30 s; its log:" >&2; tail -20 "$work/sluiced.log" >&2; exit 1; }
sleep 1
rss0=$(rssKiB "$pid")

# The last service: a request to it answers with its current x-rev.
last=$((SERVICES - 1))
rev() {
  curl -s -o /dev/null -D - --max-time 1 -H "Host: svc$last" "http://127.0.0.1:$proxyPort/" |
    awk 'tolower($1) == "x-rev:" { gsub("\r", "", $2); print $2 }'
}
first=$(rev)
[ "$first" = 0 ] || { echo "bench-scale: svc$last answers with x-rev '$first', not 0:" >&2; curl -s -i --max-time 2 -H "Host: svc$last" "http://127.0.0.1:$proxyPort/" | head -5 >&2; tail -5 "$work/sluiced.log" >&2; exit 1; }

lat=(); rss=()
for ((r = 1; r <= RELOADS; r++)); do
  svcFile "$last" "$r" > "$work/svc.tmp"
  t0=$(nowMs)
  mv "$work/svc.tmp" "$work/config/svc$last.yaml"
  seen=
  for _ in $(seq 1000); do
    if [ "$(rev)" = "$r" ]; then seen=$(( $(nowMs) - t0 )); break; fi
    sleep 0.005
  done
  [ -n "$seen" ] || { echo "bench-scale: reload $r never answered with x-rev $r" >&2; exit 1; }
  lat+=("$seen")
  sleep 1  # settled: the replaced snapshot is freed
  rss+=("$(rssKiB "$pid")")
done

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
maxOf() { printf '%s\n' "$@" | sort -n | tail -1; }
rssLast=${rss[$((RELOADS - 1))]}
suffix=; [ "$REGISTRY" = serviceentry ] || suffix=-$REGISTRY
out="$BUILD/bench-scale-results$suffix.md"
{
  echo "## sluice scale bench: $SERVICES services from $REGISTRY (one file each), $RELOADS one-file reloads, $(date -u +%FT%TZ)"
  echo
  echo "| what | value |"
  echo "|---|---:|"
  echo "| ready after start | $ready ms |"
  echo "| RSS at ready | $((rss0 / 1024)) MiB |"
  echo "| RSS after reload 1 / 5 / $RELOADS | $((${rss[0]} / 1024)) / $((${rss[4 < RELOADS ? 4 : RELOADS - 1]} / 1024)) / $((rssLast / 1024)) MiB |"
  echo "| RSS change, ready to last reload | $(awk -v a="$rss0" -v b="$rssLast" 'BEGIN { printf "%+.1f%%", (b - a) * 100 / a }') |"
  echo "| one-file change live (median / max) | $(median "${lat[@]}") / $(maxOf "${lat[@]}") ms |"
  echo
  echo "Reload latencies (ms): ${lat[*]}"
  echo "RSS after each reload (KiB): ${rss[*]}"
} | tee "$out"
echo "bench-scale: wrote $out"
