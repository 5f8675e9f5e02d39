# Helpers for scripts/bench*.sh (sourced). Pure bash + awk: no python.

# The settings every bench section shares (env overrides), and the command
# prefixes that pin a measured process. Every measured process runs in its
# own session at the same raised priority (root only; see run-pinned.sh), so
# a compile elsewhere on the machine disturbs all peers alike, and less.
# setsid does not fork here (a script's background jobs are not group
# leaders), so $! stays the measured pid.
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
CONNS=${CONNS:-32}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
NICE=${NICE:-$( [ "$(id -u)" = 0 ] && echo -20 || echo 0)}
ON_PROXY=(setsid scripts/bench/run-pinned.sh "$PROXY_CPU" "$NICE")
ON_LOAD=(setsid scripts/bench/run-pinned.sh "$LOAD_CPU" "$NICE")

FREE_PORTS_TAKEN=" "
# A loopback TCP port no socket uses right now, below the ephemeral range (so
# no outgoing connection can be holding it) and not handed out before. Racy
# by nature (the port is not held); fine for a benchmark that starts its
# peers at once. Usage: freePort VAR (no subshell, so the list persists).
freePort() {
  local -n out=$1
  local low port
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range)
  [ "$low" -gt 12000 ] || low=32768
  for _ in $(seq 200); do
    port=$((10000 + RANDOM % (low - 10000)))
    [[ $FREE_PORTS_TAKEN == *" $port "* ]] && continue
    if [ -z "$(ss -Htan "( sport = :$port )")" ]; then
      FREE_PORTS_TAKEN+="$port "
      out=$port; return 0
    fi
  done
  echo "bench: no free loopback port found" >&2
  return 1
}

# Waits (bounded, ~10 s) until an HTTP GET on URL answers at all, or with
# STATUS when given.
waitHttp() {
  local url=$1 want=${2:-} code
  for _ in $(seq 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
    if [ "$code" != 000 ] && { [ -z "$want" ] || [ "$code" = "$want" ]; }; then return 0; fi
    sleep 0.1
  done
  echo "bench: $url never answered" >&2
  return 1
}

# "utime stime" (clock ticks) summed over the given pids. Fields are counted
# after the last ')' because the comm field may contain spaces.
cpuTicks() {
  local user=0 sys=0 pid rest
  for pid in "$@"; do
    rest=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
    # After "pid (comm) ", field 3 is state; utime/stime are fields 14/15.
    set -- $rest
    user=$((user + ${12})); sys=$((sys + ${13}))
  done
  echo "$user $sys"
}

# VmRSS in KiB summed over the given pids.
rssKib() {
  local total=0 pid kb
  for pid in "$@"; do
    kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
    total=$((total + ${kb:-0}))
  done
  echo "$total"
}

# The pids of a process and its direct children (nginx master + worker).
withChildren() {
  local pid=$1
  echo "$pid"
  pgrep -P "$pid" || true
}

# wrk latency value ("812.00us", "1.23ms", "2.01s") to milliseconds.
toMs() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000
    else if (v ~ /m$/) n *= 60000
    printf "%.3f", n }'
}

# Parses a wrk --latency report on stdin into
# "rps p50ms p99ms requests non2xx sockerrs".
parseWrk() {
  awk '
    /^Requests\/sec:/ { rps = $2 }
    /^ +50%/ { p50 = $2 }
    /^ +99%/ { p99 = $2 }
    / requests in / { reqs = $1 }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ {
      gsub(/,/, ""); errs = $4 + $6 + $8 + $10
    }
    END { printf "%s %s %s %s %d %d\n", rps, p50, p99, reqs, non2xx, errs }'
}

# Median of the numbers on stdin (one per line); mean of the middle two for
# an even count.
median() {
  sort -g | awk '{ a[NR] = $1 } END {
    if (NR == 0) { print "nan"; exit }
    if (NR % 2) printf "%.3f\n", a[(NR + 1) / 2]
    else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# Substitutes @NAME@ placeholders from NAME=value arguments.
render() {
  local template=$1; shift
  local args=() kv
  for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${args[@]}" "$template"
}

# requests field of sluice-upstream's /__counter JSON.
backendCount() {
  curl -s --max-time 2 "http://127.0.0.1:$1/__counter" | grep -o '"requests": *[0-9]*' | grep -o '[0-9]*$' || true
}

# Sets BPF_UNAVAILABLE to why the eBPF data path cannot be benchmarked here,
# or to "" when it can: that needs root and a cgroup2 mount (its path goes
# to CGROOT). Pins go under BPFROOT: /sys/fs/bpf when it is bpffs, else a
# private bpffs this run mounts on a fresh temporary folder (never on
# /sys/fs/bpf) and bpfRelease unmounts and removes.
bpfCheck() {
  BPF_UNAVAILABLE=
  BPF_PRIVATE=
  CGROOT=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
  if [ "$(id -u)" != 0 ]; then BPF_UNAVAILABLE="not root (the eBPF data path needs root)"
  elif [ -z "$CGROOT" ]; then BPF_UNAVAILABLE="no cgroup2 mount in /proc/mounts"
  elif [ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" = bpf_fs ]; then BPFROOT=/sys/fs/bpf
  else
    BPFROOT=$(mktemp -d /tmp/sluice-bench-bpffs.XXXXXX)
    if mount -t bpf bpf "$BPFROOT" 2>/dev/null; then
      BPF_PRIVATE=$BPFROOT
    else
      rmdir "$BPFROOT"
      BPF_UNAVAILABLE="/sys/fs/bpf is not bpffs and a private bpffs could not be mounted"
    fi
  fi
}
bpfRelease() {
  if [ -n "${BPF_PRIVATE:-}" ]; then
    umount "$BPF_PRIVATE" 2>/dev/null || umount -l "$BPF_PRIVATE" 2>/dev/null || true
    rmdir "$BPF_PRIVATE" 2>/dev/null || true
    BPF_PRIVATE=
  fi
}

# Teardown shared by the sections: the load generator still running
# (wrk_pid), then every pid in `pids` (killed, then reaped).
stopProcesses() {
  if [ -n "${wrk_pid:-}" ]; then kill "$wrk_pid" 2>/dev/null || true; fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}

# For a section with nothing but processes and a work directory to undo:
# both go on exit, ^C or TERM.
onExitStopAll() {
  trap 'trap - INT TERM EXIT; stopProcesses; rm -rf "$work"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}
