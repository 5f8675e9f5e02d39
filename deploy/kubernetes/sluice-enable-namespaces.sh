#!/bin/sh
# sluice-enable-namespaces.sh: per-node reconciler that turns the namespace
# label sluice.io/dataplane=enabled into `sluicectl mesh enable` calls for the
# pod cgroups of this node. Runs as the `mesh-enabler` container of the sluiced
# DaemonSet (see ../README.md); needs sh, kubectl, sluicectl, ls, awk, tr.
#
#   sluice-enable-namespaces.sh [run]   reconcile every $INTERVAL s until SIGTERM
#   sluice-enable-namespaces.sh once    one reconcile round
#   sluice-enable-namespaces.sh status  enabled cgroup ids, with the pod cgroup
#                                       path under $CGROUP_ROOT when known
#
# Environment:
#   NODE_NAME      this node (downward API spec.nodeName)          required
#   CGROUP_ROOT    the kubepods cgroup as mounted in this container:
#                  .../kubepods.slice (systemd driver) or .../kubepods (cgroupfs)
#   PIN_DIR        sluiced's --bpf-pin-dir            default /sys/fs/bpf/sluice
#   INTERVAL       seconds between rounds, 1..300     default 5
#   SKIP_NAMESPACE never enabled, even if labelled (the DaemonSet's own)
#   LABEL          namespace selector        default sluice.io/dataplane=enabled
#
# Ownership: the helper owns the pod-level cgroups under CGROUP_ROOT. A pod
# cgroup that is enabled but not wanted (namespace unlabelled, pod finished) is
# disabled, including one enabled by hand. Cgroups elsewhere (CGROUP_ROOT
# itself, container scopes, other trees) are never touched. Nothing is
# disabled on exit: enablement lives in the pinned map and outlives restarts.

set -u

NODE_NAME=${NODE_NAME:-}
CGROUP_ROOT=${CGROUP_ROOT:-/host/sys/fs/cgroup/kubepods.slice}
PIN_DIR=${PIN_DIR:-/sys/fs/bpf/sluice}
INTERVAL=${INTERVAL:-5}
SKIP_NAMESPACE=${SKIP_NAMESPACE:-}
LABEL=${LABEL:-sluice.io/dataplane=enabled}
KUBECTL=${KUBECTL:-kubectl}
SLUICECTL=${SLUICECTL:-sluicectl}

NL='
'

log() { printf 'sluice-enable-namespaces: %s\n' "$*" >&2; }

# pod_cgroup_dir ROOT UID: print the pod-level cgroup directory of the pod
# with this UID, or return 1 if it does not exist (yet, or any more).
# systemd driver: kubepods[-<qos>].slice/kubepods[-<qos>]-pod<uid, - as _>.slice
# cgroupfs driver: kubepods[/<qos>]/pod<uid>
# Guaranteed pods sit directly under ROOT, the others under their QoS level.
# Both layouts are probed: their names cannot collide.
pod_cgroup_dir() {
	_root=$1
	_uid=$2
	case $_uid in
	'' | *[!0-9a-fA-F-]*) return 1 ;; # a UID is hex and dashes; refuse globs and slashes
	esac
	_u=$(printf '%s' "$_uid" | tr - _)
	for _d in \
		"$_root/kubepods-pod$_u.slice" \
		"$_root/kubepods-burstable.slice/kubepods-burstable-pod$_u.slice" \
		"$_root/kubepods-besteffort.slice/kubepods-besteffort-pod$_u.slice" \
		"$_root/pod$_uid" \
		"$_root/burstable/pod$_uid" \
		"$_root/besteffort/pod$_uid"; do
		if [ -d "$_d" ]; then
			printf '%s\n' "$_d"
			return 0
		fi
	done
	return 1
}

# all_pod_cgroup_dirs ROOT: every pod-level cgroup directory under ROOT, one a
# line, in either layout. An unmatched glob stays literal and fails -d.
all_pod_cgroup_dirs() {
	for _d in \
		"$1"/kubepods-pod*.slice \
		"$1"/kubepods-burstable.slice/kubepods-burstable-pod*.slice \
		"$1"/kubepods-besteffort.slice/kubepods-besteffort-pod*.slice \
		"$1"/pod* \
		"$1"/burstable/pod* \
		"$1"/besteffort/pod*; do
		[ -d "$_d" ] && printf '%s\n' "$_d"
	done
	return 0
}

# cgroup_id DIR: the cgroup id sluicectl uses (the directory's inode number).
cgroup_id() {
	# shellcheck disable=SC2012 # ls -di is the POSIX way to get an inode
	ls -di -- "$1" 2>/dev/null | awk '{ print $1 }'
}

# enabled_ids: the ids in the pinned sluice_enabled map, one a line, from
# `sluicectl mesh status` lines "enabled  <path>  id <N>". Fails when the map
# cannot be read (for instance before any daemon or enable created it).
enabled_ids() {
	_out=$("$SLUICECTL" mesh status --bpf-pin-dir "$PIN_DIR" 2>&1) || {
		log "mesh status: $_out"
		return 1
	}
	printf '%s\n' "$_out" | awk '$1 == "enabled" && $(NF-1) == "id" { print $NF }'
}

# in_list ITEM LIST: LIST is newline-separated.
in_list() {
	case "$NL$2$NL" in
	*"$NL$1$NL"*) return 0 ;;
	esac
	return 1
}

# desired_dirs: pod cgroup dirs on this node that should be captured. Fails
# (and the round is skipped) when the API server cannot be asked, so an API
# outage never disables anything.
desired_dirs() {
	_ns=$("$KUBECTL" --request-timeout=10s get namespaces -l "$LABEL" \
		-o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}') || return 1
	_pods=$("$KUBECTL" --request-timeout=10s get pods --all-namespaces --field-selector "spec.nodeName=$NODE_NAME" \
		-o jsonpath='{range .items[*]}{.metadata.namespace}{" "}{.metadata.uid}{" "}{.status.phase}{"\n"}{end}') ||
		return 1
	printf '%s\n' "$_pods" | while read -r _pns _uid _phase; do
		[ -n "$_pns" ] || continue
		[ "$_pns" = "$SKIP_NAMESPACE" ] && continue
		in_list "$_pns" "$_ns" || continue
		# A finished pod has no process left to capture; releasing its entry
		# while the cgroup still exists keeps the 1024-entry map from filling.
		case $_phase in Succeeded | Failed) continue ;; esac
		pod_cgroup_dir "$CGROUP_ROOT" "$_uid" || true
	done
}

reconcile() {
	want=$(desired_dirs) || {
		log "cannot list namespaces/pods; nothing changed this round"
		return 1
	}
	have_ok=1
	have=$(enabled_ids) || have_ok=0

	changed=0
	failed=0
	want_ids=
	for d in $want; do # cgroup paths have no whitespace
		id=$(cgroup_id "$d")
		[ -n "$id" ] || continue # pod went away since the lookup
		want_ids="$want_ids$id$NL"
		if [ "$have_ok" = 1 ] && in_list "$id" "$have"; then continue; fi
		if "$SLUICECTL" mesh enable --cgroup "$d" --bpf-pin-dir "$PIN_DIR" >/dev/null; then
			log "enabled $d"
			changed=$((changed + 1))
		else
			failed=$((failed + 1))
		fi
	done

	# Without a readable map there is nothing to disable.
	if [ "$have_ok" = 1 ] && [ -n "$have" ]; then
		for d in $(all_pod_cgroup_dirs "$CGROUP_ROOT"); do
			id=$(cgroup_id "$d")
			[ -n "$id" ] || continue
			in_list "$id" "$have" || continue
			in_list "$id" "$want_ids" && continue
			if "$SLUICECTL" mesh disable --cgroup "$d" --bpf-pin-dir "$PIN_DIR" >/dev/null; then
				log "disabled $d (new connections only; open ones keep their path)"
				changed=$((changed + 1))
			else
				failed=$((failed + 1))
			fi
		done
	fi
	[ "$changed" = 0 ] || log "round done: $changed change(s), $failed failure(s)"
	[ "$failed" = 0 ]
}

status() {
	have=$(enabled_ids) || return 1
	paths=$(all_pod_cgroup_dirs "$CGROUP_ROOT")
	for id in $have; do
		p="(not a pod cgroup under $CGROUP_ROOT, or gone)"
		for d in $paths; do
			if [ "$(cgroup_id "$d")" = "$id" ]; then
				p=$d
				break
			fi
		done
		printf 'enabled  id %-12s %s\n' "$id" "$p"
	done
}

check_env() {
	if [ "${1:-}" != status ] && [ -z "$NODE_NAME" ]; then
		log "NODE_NAME is not set (downward API spec.nodeName)"
		return 1
	fi
	if [ ! -d "$CGROUP_ROOT" ]; then
		log "CGROUP_ROOT $CGROUP_ROOT is not a directory (systemd driver: .../kubepods.slice, cgroupfs: .../kubepods)"
		return 1
	fi
	case $INTERVAL in
	'' | *[!0-9]*)
		log "INTERVAL must be whole seconds, got '$INTERVAL'"
		return 1
		;;
	esac
	if [ "$INTERVAL" -lt 1 ] || [ "$INTERVAL" -gt 300 ]; then
		log "INTERVAL must be 1..300 seconds, got $INTERVAL"
		return 1
	fi
}

run() {
	check_env || exit 2
	sleeper=
	# The sleep runs in the background so SIGTERM ends the wait at once.
	trap 'log "SIGTERM: exiting (enablement stays in the pinned map)"; [ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null; exit 0' TERM INT
	log "node $NODE_NAME, cgroups under $CGROUP_ROOT, maps in $PIN_DIR, every ${INTERVAL}s"
	while :; do
		reconcile || true
		sleep "$INTERVAL" &
		sleeper=$!
		wait "$sleeper"
		sleeper=
	done
}

# Sourcing with SLUICE_ENABLE_LIB=1 loads the functions only (for tests).
if [ "${SLUICE_ENABLE_LIB:-0}" != 1 ]; then
	case ${1:-run} in
	run) run ;;
	once)
		check_env || exit 2
		reconcile
		;;
	status)
		check_env status || exit 2
		status
		;;
	*)
		log "usage: $0 [run|once|status]"
		exit 2
		;;
	esac
fi
