#!/usr/bin/env bash
# make e2e: maclan on the kubelet path for real. A private containerd (Debian's
# containerd and runc) runs the shipped conflist-examples/10-maclan.conflist;
# crictl creates a pod sandbox from a pause image built here (e2e/pause, packed
# by e2e/mkimage: no registry needed); the sandbox gets a macvlan eth0 and a
# lease, the gateway pings it, and stopping and removing it releases the lease.
#
#   switch ns: bridge br0 (the LAN)
#   host ns:   eth0 on br0, the macvlan master; containerd runs HERE, so the
#              plugins it starts run here too, never in the machine's namespace
#   gw ns:     eth0 on br0, 198.51.100.1 and 2001:db8:100::1
#
# Everything (namespaces, containerd and its shims, mounts, files) is removed
# on exit, even on failure. The last line is "N passed, N failed"; the exit
# status is non-zero on any failure.
set -uo pipefail

BIN=${MACLAN_BIN_DIR:-$PWD/bin}
TOOLS=${MACLAN_TOOLS_DIR:-$PWD/.tools/bin}
CRICTL=${CRICTL:-$TOOLS/crictl}
EXAMPLE=${MACLAN_E2E_CONFLIST:-$PWD/conflist-examples/10-maclan.conflist}
IMAGE=localhost/maclan/pause:e2e
P=mle2e$$
WORK=$(mktemp -d /tmp/maclan-e2e.XXXXXX)
SOCK=$WORK/containerd.sock
CTRD_PID=
POD=
# containerd 1.6 keeps shim sockets under /run/containerd/s whatever its
# state directory; the directories it makes there are removed if they were not
# there before.
[ -e /run/containerd ] && HAD_RUN_CONTAINERD=1 || HAD_RUN_CONTAINERD=
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
cri() { "$CRICTL" --config "$WORK/crictl.yaml" "$@"; }

cleanup() {
	local rc=$?
	set +e
	if [ -n "$CTRD_PID" ] && kill -0 "$CTRD_PID" 2>/dev/null; then
		for pod in $(cri pods -q 2>/dev/null); do
			cri stopp "$pod" >/dev/null 2>&1
			cri rmp -f "$pod" >/dev/null 2>&1
		done
		kill -TERM "$CTRD_PID"
		poll 20 eval '! kill -0 "$CTRD_PID" 2>/dev/null' || kill -KILL "$CTRD_PID"
		wait "$CTRD_PID" 2>/dev/null
	fi
	# Shims of this containerd outlive it; they are told apart by its socket.
	for pid in $(pgrep -f -- "-address $SOCK" 2>/dev/null); do kill -KILL "$pid"; done
	# Mounts under the work directory (sandbox netns, rootfs), deepest first.
	findmnt -rn -o TARGET | grep "^$WORK/" | sort -r | while read -r m; do umount -l "$m"; done
	for n in gw host sw; do ip netns del "$P$n" 2>/dev/null; done
	rm -rf --one-file-system "$WORK"
	[ -n "$HAD_RUN_CONTAINERD" ] || rmdir /run/containerd/s /run/containerd 2>/dev/null
	[ "$rc" -eq 0 ] || [ "$failed" -gt 0 ] || fail "aborted (exit $rc)"
	printf '\n%d passed, %d failed\n' "$passed" "$failed"
	[ "$failed" -eq 0 ] || exit 1
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || die "make e2e needs root"
for f in "$BIN/maclan" "$BIN/maclan-ipam" "$TOOLS/loopback" "$CRICTL" "$EXAMPLE"; do
	[ -e "$f" ] || die "missing $f: run 'make build tools' (make e2e does)"
done
for c in containerd containerd-shim-runc-v2 runc ctr nsenter findmnt; do
	command -v "$c" >/dev/null || die "missing $c: apt-get install containerd runc util-linux"
done

say "lab: switch, host (master eth0, runs containerd), gateway ($P*)"
set -e # any failed step aborts; the trap tears down what exists
lab_up
set +e
LAB_NS=/var/run/netns/${P}host

say "pause image (static Go, OCI tarball) and containerd configuration"
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$WORK/pause" ./e2e/pause || die "build e2e/pause"
go run ./e2e/mkimage -binary "$WORK/pause" -name "$IMAGE" -o "$WORK/pause.tar" || die "pack the pause image"

# The CNI directory holds the plugins containerd runs: maclan behind a
# wrapper that records each call (to see the two DELs), maclan-ipam, and the
# reference loopback that containerd always adds.
mkdir -p "$WORK/net.d" "$WORK/cni-bin" "$WORK/leases" "$WORK/pod-logs"
printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n' "$SOCK" "$SOCK" >"$WORK/crictl.yaml"
ln -s "$BIN/maclan-ipam" "$WORK/cni-bin/maclan-ipam"
ln -s "$TOOLS/loopback" "$WORK/cni-bin/loopback"
cat >"$WORK/cni-bin/maclan" <<EOF
#!/bin/sh
in=\$(cat)
printf '%s' "\$in" | "$BIN/maclan" "\$@"
rc=\$?
ver=\$(printf '%s' "\$in" | grep -o '"cniVersion": *"[^"]*"' | head -1 | cut -d'"' -f4)
printf '%s netns=%s version=%s rc=%s\n' "\$CNI_COMMAND" "\${CNI_NETNS:-none}" "\$ver" "\$rc" >>"$WORK/calls.log"
exit \$rc
EOF
chmod +x "$WORK/cni-bin/maclan"
# The shipped example, with the lease store moved into the work directory.
sed 's|"type": "maclan-ipam",|"type": "maclan-ipam", "dataDir": "'"$WORK/leases"'",|' \
	"$EXAMPLE" >"$WORK/net.d/10-maclan.conflist"
grep -q "\"dataDir\": \"$WORK/leases\"" "$WORK/net.d/10-maclan.conflist" || die "set dataDir in the example"
NET=$(sed -n 's/^ *"name": "\([^"]*\)".*/\1/p' "$WORK/net.d/10-maclan.conflist" | head -1)

cat >"$WORK/config.toml" <<EOF
version = 2
root = "$WORK/root"
state = "$WORK/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$WORK/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$IMAGE"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$WORK/cni-bin"
    conf_dir = "$WORK/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$WORK/runc"
EOF

say "containerd in the lab's host namespace"
# The guard: the process that becomes containerd must be in the lab host
# namespace, and not in this script's or pid 1's (the machine's, whose eth0
# is a real NIC). containerd runs its CNI plugins in its own namespace.
nsenter --net="$LAB_NS" -- sh -c '
	self=$(stat -L -c %i /proc/self/ns/net)
	[ "$self" = "$(stat -L -c %i "$1")" ] || { echo "guard: not in the lab host namespace" >&2; exit 1; }
	for other in "$2" /proc/1/ns/net; do
		[ "$self" != "$(stat -L -c %i "$other" 2>/dev/null)" ] || { echo "guard: in the machine namespace" >&2; exit 1; }
	done
	exec containerd --config "$3"' sh "$LAB_NS" "/proc/$$/ns/net" "$WORK/config.toml" \
	>"$WORK/containerd.log" 2>&1 &
CTRD_PID=$!
if poll 30 eval 'cri version >/dev/null 2>&1 || ! kill -0 $CTRD_PID'; then :; fi
kill -0 "$CTRD_PID" 2>/dev/null || { tail -20 "$WORK/containerd.log"; die "containerd did not start"; }
[ "$(stat -L -c %i "/proc/$CTRD_PID/ns/net")" = "$(stat -L -c %i "$LAB_NS")" ] &&
	pass "containerd runs in the lab host namespace" || die "containerd is not in the lab host namespace"
cri version >/dev/null 2>&1 || { tail -20 "$WORK/containerd.log"; die "containerd CRI does not answer"; }

ctr --address "$SOCK" -n k8s.io images import "$WORK/pause.tar" >/dev/null 2>&1 ||
	die "ctr images import the pause image"
check "CRI sees the imported pause image" eval 'cri inspecti "$IMAGE" >/dev/null 2>&1'
conditions() { cri info -o go-template --template '{{range .status.conditions}}{{.type}}={{.status}} {{end}}'; }
net_ready() { conditions 2>/dev/null | grep -q 'NetworkReady=true'; }
check "CRI network is ready with the maclan conflist" poll 30 net_ready || conditions

say "crictl runp: a pod sandbox on the LAN"
cat >"$WORK/pod.json" <<EOF
{
  "metadata": {"name": "maclan-e2e", "namespace": "default", "uid": "maclan-e2e-$$", "attempt": 0},
  "log_directory": "$WORK/pod-logs",
  "linux": {"security_context": {"namespace_options": {"network": 0}}}
}
EOF
POD=$(cri runp "$WORK/pod.json" 2>>"$WORK/crictl.log") || { tail -30 "$WORK/containerd.log"; die "crictl runp"; }
pass "crictl runp: sandbox ${POD:0:13}"
PID=$(cri inspectp -o go-template --template '{{.info.pid}}' "$POD")
POD_IP=$(cri inspectp -o go-template --template '{{.status.network.ip}}' "$POD")
in_pod() { nsenter --net="/proc/$PID/ns/net" -- "$@"; }
echo "sandbox pid $PID, CRI reports IP $POD_IP"
in_pod ip -d addr show dev eth0

check "sandbox eth0 is a macvlan in bridge mode" eval 'in_pod ip -d -o link show dev eth0 | grep -q "macvlan mode bridge"'
IP4=$(in_pod ip -4 -o addr show dev eth0 scope global | awk '{print $4}' | cut -d/ -f1)
IP6=$(in_pod ip -6 -o addr show dev eth0 scope global | awk '{print $4}' | cut -d/ -f1)
check "sandbox eth0 has IPv4 $IP4 from the range, the IP CRI reports" \
	eval '[[ "$IP4" == 198.51.100.1[0-9][0-9] ]] && [ "$IP4" = "$POD_IP" ]'
check "sandbox eth0 has IPv6 $IP6 in 2001:db8:100::/64" eval '[[ "$IP6" == 2001:db8:100:* ]]'
leases() { "$BIN/maclan-ipam" ls --data-dir "$WORK/leases" --network "$NET" -o json; }
check "maclan-ipam holds the leases of the sandbox" \
	eval 'leases | grep -q "\"containerID\": *\"$POD\"" && leases | grep -q "\"ip\": *\"$IP4\""'
ping1() { "$@" ping -n -q -c1 -W1 "$dst" >/dev/null 2>&1; }
dst=$IP4 check "the gateway pings the pod at $IP4" poll 10 ping1 ip netns exec "${P}gw"
dst=$IP6 check "the gateway pings the pod at $IP6" poll 10 ping1 ip netns exec "${P}gw"
dst=198.51.100.1 check "the pod pings the gateway" poll 10 ping1 in_pod

say "crictl stopp and rmp: the lease is released"
cri stopp "$POD" >/dev/null || fail "crictl stopp"
check "after stopp, maclan-ipam holds no lease" eval '! leases | grep -q "\"ip\""'
cri rmp "$POD" >/dev/null || fail "crictl rmp"
check "after rmp, the pod is gone" eval '[ -z "$(cri pods -q)" ]'
POD=
echo "plugin calls recorded by the wrapper:"
sed 's/^/  /' "$WORK/calls.log"
check "containerd ran ADD once, at cniVersion 1.0.0 (from cniVersions), netns under its state dir" \
	eval '[ "$(grep -c "^ADD netns=$WORK/state/.* version=1.0.0 rc=0$" "$WORK/calls.log")" = 1 ]'
check "DEL with the netns succeeded" eval 'grep -q "^DEL netns=/.* rc=0$" "$WORK/calls.log"'
check "DEL without a netns succeeded" eval 'grep -q "^DEL netns=none .*rc=0$" "$WORK/calls.log"'
check "no plugin call failed" eval '! grep -qv " rc=0$" "$WORK/calls.log"'
check "the lab host has no macvlan left" eval '[ -z "$(ip -n "${P}host" -o link show type macvlan)" ]'
