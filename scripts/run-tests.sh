#!/usr/bin/env bash
# Runs every test binary `make test` built and prints one summary line.
# Unit tests first (fast), then integration tests (real processes on
# loopback), then BPF tests (root; they skip with a reason elsewhere, and fail
# instead of skipping when CI=true), then the deploy/ helper's shell test,
# then a 60 s soak and each fuzz target for a few seconds.
set -uo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
export SLUICE_BUILD=$BUILD

passed=0; failed=0; skipped=0; status=0
run() {
  local bin=$1; shift
  [ -x "$bin" ] || return 0
  echo "=== $bin"
  local xml; xml=$(mktemp)
  "$bin" --gtest_output="xml:$xml" "$@"
  local rc=$?
  if [ -s "$xml" ]; then
    local t f s
    t=$(grep -m1 -o 'tests="[0-9]*"' "$xml" | grep -o '[0-9]*')
    f=$(grep -m1 -o 'failures="[0-9]*"' "$xml" | grep -o '[0-9]*')
    s=$(grep -c '<skipped' "$xml")
    passed=$((passed + t - f - s)); failed=$((failed + f)); skipped=$((skipped + s))
  fi
  if [ $rc -ne 0 ]; then
    status=1
    [ -s "$xml" ] || failed=$((failed + 1))  # crashed before writing results
  fi
  rm -f "$xml"
}

# A shell test script counts as one test: exit 0 passes.
runScript() {
  echo "=== $1"
  if sh "$1"; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi
}

run "$BUILD/unit_tests"
run "$BUILD/integration_tests"
run "$BUILD/bpf_tests"
runScript deploy/kubernetes/sluice-enable-namespaces_test.sh

# A short soak (scripts/soak.sh): mixed traffic, reloads and upstream kills
# for SOAK_TEST_SECONDS; one test.
echo "=== soak, ${SOAK_TEST_SECONDS:-60}s"
if SECONDS_TOTAL=${SOAK_TEST_SECONDS:-60} bash scripts/soak.sh "$BUILD"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); status=1
fi

# Each fuzz target `make test` built runs FUZZ_TEST_SECONDS from its seeds:
# one test each, failed by a crash or a broken property.
if compgen -G "$BUILD/fuzz/*_fuzz" >/dev/null; then
  echo "=== fuzz targets, ${FUZZ_TEST_SECONDS:-15}s each"
  while IFS= read -r line; do
    echo "$line"
    case $line in
      "fuzz: "*" ok "*) passed=$((passed + 1)) ;;
      "fuzz: "*" FAILED"*) failed=$((failed + 1)); status=1 ;;
    esac
  done < <(bash scripts/run-fuzz.sh "$BUILD" "${FUZZ_TEST_SECONDS:-15}")
fi

echo "tests: $passed passed, $failed failed, $skipped skipped"
exit $status
