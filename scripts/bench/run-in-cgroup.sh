#!/usr/bin/env bash
# Usage: scripts/bench/run-in-cgroup.sh CGROUP_DIR CMD [ARGS...]
# Moves itself into CGROUP_DIR (a cgroup v2 directory the caller created),
# then execs CMD, so CMD keeps this pid and opens its first socket there.
set -euo pipefail
cg=$1; shift
echo $$ > "$cg/cgroup.procs"
exec "$@"
