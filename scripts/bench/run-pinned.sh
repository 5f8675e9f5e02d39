#!/usr/bin/env bash
# Usage: setsid scripts/bench/run-pinned.sh CPU NICE CMD [ARGS...]
# Runs CMD on CPU at priority NICE, keeping this pid (exec all the way down).
# With sched_autogroup, nice only ranks tasks within one session, so the new
# session's autogroup gets NICE as well. The guard makes sure that session is
# our own (setsid ran): never raise the caller's shared session.
set -euo pipefail
cpu=$1 nice=$2; shift 2
read -r -a stat < <(sed 's/.*) //' /proc/self/stat)
session=${stat[3]}  # field 6 of /proc/PID/stat, counted after "pid (comm) "
if [ "$nice" -lt 0 ] && [ "$session" = $$ ] && [ -w /proc/self/autogroup ]; then
  echo "$nice" > /proc/self/autogroup 2>/dev/null || true
fi
exec nice -n "$nice" taskset -c "$cpu" "$@"
