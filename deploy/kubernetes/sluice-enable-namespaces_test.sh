#!/bin/sh
# Tests for sluice-enable-namespaces.sh without a cluster or a kernel: a fake
# kubepods tree under a temp dir, a stub kubectl (canned namespaces and pods)
# and a stub sluicectl that keeps the "enabled map" as a file of inode
# numbers and prints `mesh status` in sluicectl's own format.
#   sh deploy/kubernetes/sluice-enable-namespaces_test.sh   (exit 0 = pass)
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
SCRIPT=$HERE/sluice-enable-namespaces.sh
REAL_KUBECTL=$(command -v kubectl || true) # before the stub shadows it
T=$(mktemp -d /tmp/sluice-enable-test.XXXXXX) || exit 1
trap 'rm -rf "$T"' EXIT

fails=0
pass() { printf 'ok   %s\n' "$1"; }
fail() {
	printf 'FAIL %s\n' "$1"
	fails=$((fails + 1))
}
expect_eq() { # name got want
	if [ "$2" = "$3" ]; then pass "$1"; else fail "$1: got [$2] want [$3]"; fi
}

# ---- stubs -----------------------------------------------------------------
mkdir -p "$T/bin"
cat >"$T/bin/kubectl" <<'EOF'
#!/bin/sh
[ -e "$STUB/kubectl.fail" ] && { echo "stub: connection refused" >&2; exit 1; }
case "$*" in
*"get namespaces -l sluice.io/dataplane=enabled"*) cat "$STUB/namespaces" ;;
*"get pods --all-namespaces --field-selector spec.nodeName=node-1"*) cat "$STUB/pods" ;;
*) echo "stub kubectl: unexpected: $*" >&2; exit 3 ;;
esac
EOF
cat >"$T/bin/sluicectl" <<'EOF'
#!/bin/sh
# mesh status|enable --cgroup D|disable --cgroup D, with --bpf-pin-dir P
verb=$2; dir=
[ "${3:-}" = --cgroup ] && dir=$4
echo "$verb $dir" >>"$STUB/calls"
case $verb in
status)
	[ -e "$STUB/map" ] || { echo "sluicectl mesh: cannot open $STUB/pin/sluice_enabled: No such file or directory" >&2; exit 1; }
	echo "pin dir: $STUB/pin"
	[ -s "$STUB/map" ] || { echo "no cgroup enabled"; exit 0; }
	while read -r id; do
		printf 'enabled  %-60s id %s\n' "(cgroup no longer exists)" "$id"
	done <"$STUB/map" ;;
enable)
	id=$(ls -di -- "$dir" | awk '{print $1}') || exit 1
	touch "$STUB/map"
	grep -qx "$id" "$STUB/map" || echo "$id" >>"$STUB/map" ;;
disable)
	id=$(ls -di -- "$dir" | awk '{print $1}') || exit 1
	grep -vx "$id" "$STUB/map" >"$STUB/map.new"; mv "$STUB/map.new" "$STUB/map" ;;
esac
EOF
chmod +x "$T/bin/kubectl" "$T/bin/sluicectl"

# ---- fake cgroup trees -------------------------------------------------------
SD=$T/sys/fs/cgroup/kubepods.slice # systemd driver
U_A=1a2b3c4d-0000-4000-8000-00000000000a # burstable, shop
U_B=1a2b3c4d-0000-4000-8000-00000000000b # guaranteed, shop
U_C=1a2b3c4d-0000-4000-8000-00000000000c # besteffort, other (unlabelled)
U_D=1a2b3c4d-0000-4000-8000-00000000000d # burstable, sluice-system (skipped)
U_E=1a2b3c4d-0000-4000-8000-00000000000e # burstable, shop, Succeeded
U_F=1a2b3c4d-0000-4000-8000-00000000000f # shop, no cgroup yet
us() { printf '%s' "$1" | tr - _; }
mkdir -p \
	"$SD/kubepods-burstable.slice/kubepods-burstable-pod$(us $U_A).slice/cri-containerd-aaa.scope" \
	"$SD/kubepods-pod$(us $U_B).slice" \
	"$SD/kubepods-besteffort.slice/kubepods-besteffort-pod$(us $U_C).slice" \
	"$SD/kubepods-burstable.slice/kubepods-burstable-pod$(us $U_D).slice" \
	"$SD/kubepods-burstable.slice/kubepods-burstable-pod$(us $U_E).slice"
CF=$T/cgfs/kubepods # cgroupfs driver
mkdir -p "$CF/pod$U_B/ctr1" "$CF/burstable/pod$U_A" "$CF/besteffort/pod$U_C"

# shellcheck disable=SC2034 # read by the sourced script
SLUICE_ENABLE_LIB=1
# shellcheck source=SCRIPTDIR/sluice-enable-namespaces.sh
. "$SCRIPT"
unset SLUICE_ENABLE_LIB # or the `sh "$SCRIPT"` runs below would load functions only

# ---- path resolution ---------------------------------------------------------
expect_eq "systemd burstable" "$(pod_cgroup_dir "$SD" $U_A)" \
	"$SD/kubepods-burstable.slice/kubepods-burstable-pod$(us $U_A).slice"
expect_eq "systemd guaranteed" "$(pod_cgroup_dir "$SD" $U_B)" "$SD/kubepods-pod$(us $U_B).slice"
expect_eq "systemd besteffort" "$(pod_cgroup_dir "$SD" $U_C)" \
	"$SD/kubepods-besteffort.slice/kubepods-besteffort-pod$(us $U_C).slice"
expect_eq "cgroupfs guaranteed" "$(pod_cgroup_dir "$CF" $U_B)" "$CF/pod$U_B"
expect_eq "cgroupfs burstable" "$(pod_cgroup_dir "$CF" $U_A)" "$CF/burstable/pod$U_A"
expect_eq "cgroupfs besteffort" "$(pod_cgroup_dir "$CF" $U_C)" "$CF/besteffort/pod$U_C"
pod_cgroup_dir "$SD" $U_F >/dev/null
expect_eq "missing pod cgroup fails" "$?" 1
pod_cgroup_dir "$SD" "../../etc" >/dev/null
expect_eq "uid with a path in it is refused" "$?" 1
pod_cgroup_dir "$SD" "*" >/dev/null
expect_eq "uid with a glob is refused" "$?" 1
expect_eq "all pod dirs, systemd" "$(all_pod_cgroup_dirs "$SD" | sort)" "$(
	{
		pod_cgroup_dir "$SD" $U_A
		pod_cgroup_dir "$SD" $U_B
		pod_cgroup_dir "$SD" $U_C
		pod_cgroup_dir "$SD" $U_D
		pod_cgroup_dir "$SD" $U_E
	} | sort
)"
expect_eq "all pod dirs, cgroupfs" "$(all_pod_cgroup_dirs "$CF" | sort)" \
	"$(printf '%s\n' "$CF/besteffort/pod$U_C" "$CF/burstable/pod$U_A" "$CF/pod$U_B" | sort)"

# ---- status parsing (real sluicectl output lines) ----------------------------
cat >"$T/bin/sluicectl-real-format" <<'EOF'
#!/bin/sh
echo "pin dir: /sys/fs/bpf/sluice"
echo "enabled  /sys/fs/cgroup/unified/sluice-deploy-captest/podtest         id 9772"
echo "enabled  (cgroup no longer exists)                                    id 123"
EOF
chmod +x "$T/bin/sluicectl-real-format"
expect_eq "status parse" "$(SLUICECTL=$T/bin/sluicectl-real-format enabled_ids | tr '\n' ' ')" "9772 123 "

# ---- reconcile rounds ------------------------------------------------------
export STUB="$T/stub"
mkdir -p "$STUB"
export PATH="$T/bin:$PATH"
ENV="NODE_NAME=node-1 CGROUP_ROOT=$SD PIN_DIR=$STUB/pin SKIP_NAMESPACE=sluice-system"
# shellcheck disable=SC2086 # ENV is split on purpose; no path has spaces
once() { : >"$STUB/calls"; env $ENV sh "$SCRIPT" once 2>"$STUB/log"; }
# shellcheck disable=SC2012
idof() { ls -di -- "$1" | awk '{print $1}'; }
map_sorted() { sort "$STUB/map" 2>/dev/null | tr '\n' ' '; }
ids_sorted() { for d in "$@"; do idof "$d"; done | sort | tr '\n' ' '; }
DA=$(pod_cgroup_dir "$SD" $U_A)
DB=$(pod_cgroup_dir "$SD" $U_B)
DC=$(pod_cgroup_dir "$SD" $U_C)

printf 'shop\nsluice-system\n' >"$STUB/namespaces"
cat >"$STUB/pods" <<EOF
shop $U_A Running
shop $U_B Running
other $U_C Running
sluice-system $U_D Running
shop $U_E Succeeded
shop $U_F Pending
EOF

once
expect_eq "round 1 exit" "$?" 0
expect_eq "round 1 enables shop's running pods only (no map yet)" "$(map_sorted)" "$(ids_sorted "$DA" "$DB")"
expect_eq "round 1 calls" "$(grep -c '^enable ' "$STUB/calls")" 2

once
expect_eq "round 2 is a no-op" "$(grep -vc '^status' "$STUB/calls")" 0

sluicectl mesh enable --cgroup "$DC" --bpf-pin-dir x
sluicectl mesh enable --cgroup "$SD" --bpf-pin-dir x # not a pod cgroup: not ours
echo 999999999 >>"$STUB/map"                         # a deleted pod's stale id
once
expect_eq "pod in unlabelled namespace is disabled" "$(grep '^disable' "$STUB/calls")" "disable $DC"
expect_eq "root and stale ids are left alone" "$(map_sorted)" \
	"$( (ids_sorted "$DA" "$DB" "$SD" | tr ' ' '\n'; echo 999999999) | grep . | sort | tr '\n' ' ')"

touch "$STUB/kubectl.fail"
printf 'sluice-system\n' >"$STUB/namespaces"
before=$(map_sorted)
once
expect_eq "API failure: round fails" "$?" 1
expect_eq "API failure: nothing changed" "$(map_sorted)" "$before"
expect_eq "API failure: no sluicectl calls" "$(wc -l <"$STUB/calls" | tr -d ' ')" 0
rm "$STUB/kubectl.fail"

once
expect_eq "unlabelled namespace: its pods disabled" "$(grep '^disable' "$STUB/calls" | sort | tr '\n' ' ')" \
	"$(printf 'disable %s\n' "$DA" "$DB" | sort | tr '\n' ' ')"

expect_eq "status: root and stale ids are not named as pods" \
	"$(CGROUP_ROOT=$SD sh "$SCRIPT" status | grep -c 'not a pod cgroup')" 2
printf 'shop\n' >"$STUB/namespaces"
once
expect_eq "status after re-enable" "$(CGROUP_ROOT=$SD sh "$SCRIPT" status | grep -c "$DA\$")" 1

# ---- arguments and the loop --------------------------------------------------
for bad in 0 301 abc -1 5x; do
	# timeout: a wrongly accepted value must not leave the loop running
	timeout 5 env NODE_NAME=node-1 CGROUP_ROOT="$SD" INTERVAL="$bad" sh "$SCRIPT" run 2>/dev/null
	expect_eq "INTERVAL '$bad' refused" "$?" 2
done
env CGROUP_ROOT="$SD" sh "$SCRIPT" once 2>/dev/null
expect_eq "NODE_NAME required" "$?" 2
env NODE_NAME=node-1 CGROUP_ROOT="$T/nope" sh "$SCRIPT" once 2>/dev/null
expect_eq "missing CGROUP_ROOT refused" "$?" 2

# shellcheck disable=SC2086
env $ENV INTERVAL=300 sh "$SCRIPT" run 2>"$STUB/runlog" &
pid=$!
sleep 1
kill -TERM "$pid"
i=0
while kill -0 "$pid" 2>/dev/null && [ $i -lt 30 ]; do
	sleep 0.1
	i=$((i + 1))
done
if kill -0 "$pid" 2>/dev/null; then
	fail "SIGTERM during the 300 s sleep: still running after 3 s"
	kill -KILL "$pid"
else
	wait "$pid"
	expect_eq "SIGTERM during the sleep exits 0 promptly" "$?" 0
fi
if grep -q 'SIGTERM: exiting' "$STUB/runlog"; then pass "SIGTERM logged"; else fail "SIGTERM not logged"; fi

# ---- the manifest agrees with the script (needs kubectl and PyYAML) ---------
if [ -n "$REAL_KUBECTL" ] && python3 -c 'import yaml' 2>/dev/null; then
	if "$REAL_KUBECTL" kustomize "$HERE" >"$T/rendered.yaml" 2>"$T/kustomize.err" &&
		python3 - "$T/rendered.yaml" "$SCRIPT" <<'PY'; then
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cm = [d for d in docs if d["kind"] == "ConfigMap"
      and d["metadata"]["name"].startswith("sluice-mesh-enabler")][0]
assert cm["data"]["sluice-enable-namespaces.sh"] == open(sys.argv[2]).read(), "script differs"
pod = [d for d in docs if d["kind"] == "DaemonSet"][0]["spec"]["template"]["spec"]
vols = {v["name"]: v for v in pod["volumes"]}
assert vols["enabler"]["configMap"]["name"] == cm["metadata"]["name"], "enabler volume"
ctr = {c["name"]: c for c in pod["containers"]}
flags = dict(a[2:].split("=", 1) for a in ctr["sluiced"]["args"] if "=" in a)
env = {e["name"]: e.get("value") for e in ctr["mesh-enabler"]["env"]}
assert flags["bpf-cgroup"] == env["CGROUP_ROOT"], "--bpf-cgroup vs CGROUP_ROOT"
assert flags["bpf-pin-dir"] == env["PIN_DIR"], "--bpf-pin-dir vs PIN_DIR"
assert ctr["mesh-enabler"]["command"][1] == "/opt/sluice/sluice-enable-namespaces.sh"
for c in ctr.values():
    for m in c["volumeMounts"]:
        assert m["name"] in vols, m["name"]
PY
		pass "manifest: script ConfigMap, flags and env agree"
	else
		fail "manifest: $(cat "$T/kustomize.err")"
	fi
else
	printf 'skip manifest check (kubectl or PyYAML missing)\n'
fi

if [ "$fails" = 0 ]; then echo "PASS"; else echo "$fails FAILED"; fi
[ "$fails" = 0 ]
