#!/usr/bin/env bash
# Installs every Debian package that Sluice's build, tests, demo and benchmarks
# need (--build-only: the build's alone). Idempotent: does nothing when
# everything is present. apt only.
set -euo pipefail

BUILD_PACKAGES=(
  make g++ clang llvm pkg-config libbpf-dev bpftool
  liburing-dev libssl-dev libyaml-dev libyaml-cpp-dev libre2-dev libnghttp2-dev
  libhiredis-dev libxxhash-dev libcli11-dev nlohmann-json3-dev libfmt-dev
  # `--version` (git describe) and the image's runtime-library list (ldd)
  git libc-bin
)
PACKAGES=(
  "${BUILD_PACKAGES[@]}"
  # tests
  libgtest-dev libgmock-dev libbenchmark-dev curl redis-server openssl
  iproute2 procps util-linux
  # a real gRPC client and server for the HTTP/2 tests (Debian's python3, /usr/bin/python3)
  python3 python3-grpcio
  # fuzz targets: libFuzzer; clang 16 compiles libstdc++ 12's std::expected
  clang-16 libclang-rt-16-dev
  # benchmark peers
  haproxy nginx-light wrk nghttp2-client
)

# --build-only: what `make all` needs and nothing else (the Dockerfile).
if [ "${1:-}" = --build-only ]; then PACKAGES=("${BUILD_PACKAGES[@]}"); fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]} (run as root to install)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The peers are benchmark tools here, not services: keep their packaged
# daemons from holding ports the tests use.
for svc in nginx haproxy redis-server; do
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now "$svc" >/dev/null 2>&1 || true; fi
done
