#!/usr/bin/env bash
# Runs every fuzz target `make fuzz` built (BUILD/fuzz/*_fuzz) for SECONDS
# each, from its seed corpus tests/fuzz/corpus/<name>/ (copied: new inputs go
# to a scratch folder, the seeds stay as committed) with the dictionary
# tests/fuzz/corpus/<name>.dict when there is one (http_parser's for the
# HTTP targets). A crash leaves its input in BUILD/fuzz/crashes/ and fails
# the run; turn it into a regression test. Prints one line per target.
# Usage: scripts/run-fuzz.sh BUILD SECONDS
set -uo pipefail
BUILD=${1:-build}
SECONDS_EACH=${2:-10}
cd "$(dirname "$0")/.."
status=0
mkdir -p "$BUILD/fuzz/crashes"
for bin in "$BUILD"/fuzz/*_fuzz; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin" _fuzz)
  seeds=tests/fuzz/corpus/$name
  scratch=$(mktemp -d "/tmp/sluice-fuzz-$name.XXXXXX")
  dict=tests/fuzz/corpus/$name.dict
  case $name in forward|route_match) dict=tests/fuzz/corpus/http_parser.dict ;; esac
  args=(-max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$BUILD/fuzz/crashes/$name-")
  [ -f "$dict" ] && args+=(-dict="$dict")
  if "$bin" "${args[@]}" "$scratch" "$seeds" > "$scratch.log" 2>&1; then
    runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$scratch.log")
    echo "fuzz: $name ok (${runs:-?} inputs in ${SECONDS_EACH}s)"
  else
    echo "fuzz: $name FAILED; its log:"
    tail -40 "$scratch.log"
    status=1
  fi
  rm -rf "$scratch" "$scratch.log"
done
exit $status
