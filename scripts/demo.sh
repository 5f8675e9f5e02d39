#!/usr/bin/env bash
# `make run`: two sluice-upstream instances (reviews v1 and v2) and sluiced on
# configs/demo, in the foreground until Ctrl-C. Everything stays on loopback.
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."

pids=()
creds=$(mktemp -d /tmp/sluice-demo-credentials.XXXXXX)
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$creds"
  echo "demo: stopped"
}
trap cleanup EXIT
trap 'cleanup; exit 0' INT TERM  # Ctrl-C is how the demo is meant to end

for port in 15000 15001 18081 18082 18080 18443; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "demo: 127.0.0.1:$port is already in use; stop whatever holds it and retry" >&2
    exit 1
  fi
done

# The HTTPS gateway's certificate (configs/demo/gateway.yaml): self-signed
# ECDSA P-256 for reviews.example.com, laid out as an Istio credential.
mkdir -p "$creds/demo-tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj /CN=reviews.example.com -addext subjectAltName=DNS:reviews.example.com \
  -keyout "$creds/demo-tls/tls.key" -out "$creds/demo-tls/tls.crt" 2>/dev/null

"$BUILD/sluice-upstream" --listen 127.0.0.1:18081 --name reviews-v1 & pids+=($!)
"$BUILD/sluice-upstream" --listen 127.0.0.1:18082 --name reviews-v2 & pids+=($!)
"$BUILD/sluiced" --config-dir configs/demo --outbound 127.0.0.1:15001 --admin 127.0.0.1:15000 \
  --workers 2 --bpf off --access-log - --credentials-dir "$creds" --gateway-bind 127.0.0.1 & pids+=($!)

for _ in $(seq 50); do
  curl -fs http://127.0.0.1:15000/ready >/dev/null 2>&1 && break
  sleep 0.1
done

cat <<TXT

Sluice is serving configs/demo. Try:

  # the HTTPS gateway (TLS ends at sluiced; the certificate is the demo's own)
  curl -s --cacert $creds/demo-tls/tls.crt --resolve reviews.example.com:18443:127.0.0.1 \\
    https://reviews.example.com:18443/reviews/1
  # plain HTTP on the gateway: a redirect to https
  curl -si -H 'Host: reviews.example.com' http://127.0.0.1:18080/ | head -3
TXT
cat <<'TXT'


  # 90/10 split between reviews v1 and v2 (run it a few times)
  curl -s -H 'Host: reviews:9080' http://127.0.0.1:15001/reviews/1
  # the same, proxy style
  curl -s -x http://127.0.0.1:15001 http://reviews.default.svc.cluster.local:9080/
  # header match: jason always gets v2
  curl -s -H 'Host: reviews:9080' -H 'end-user: jason' http://127.0.0.1:15001/
  # count the split over 100 requests
  for i in $(seq 100); do curl -s -H 'Host: reviews:9080' http://127.0.0.1:15001/ | grep -o 'reviews-v[12]'; done | sort | uniq -c
  # what the proxy knows
  curl -s http://127.0.0.1:15000/config_dump | head -40
  curl -s http://127.0.0.1:15000/stats/prometheus | grep istio_requests_total

Edit configs/demo/reviews-routing.yaml (e.g. weights 50/50): it reloads live.
Ctrl-C stops everything.
TXT
wait "${pids[2]}"
