#!/usr/bin/env bash
# make e2e, second part: Docker's macvlan walk-through with a real
# Docker-compatible client. Debian's podman 4.3 uses CNI when netavark is
# absent, so it runs maclan exactly as a user's podman would:
#
#   maclan network create ... lan       (into podman's CNI configuration directory)
#   podman network ls                   (lists it)
#   podman run --network lan ...        (dynamic; then --ip, --ip6, --mac-address)
#   podman exec ... ping                (gateway and sibling, IPv4 and IPv6)
#   maclan network inspect lan          (containers, addresses, MACs)
#   podman restart / podman rm          (leases kept, then freed)
#   maclan network rm lan
#   ... and again with --host-shim, so that the host reaches its container.
#
#   switch ns: bridge br0 (the LAN)
#   host ns:   eth0 on br0, the macvlan master, 198.51.100.2; podman runs HERE
#              (nsenter --net=, not `ip netns exec`, which remounts /sys and
#              hides the cgroup mounts), so its plugins run here too
#   gw ns:     eth0 on br0, 198.51.100.1 and 2001:db8:100::1
#
# All of podman's state is under a temporary directory: --root, --runroot,
# tmp_dir, the CNI configuration directory, the lease store, and, through a
# private mount namespace that podman runs in, libcni's cache
# (/var/lib/cni), podman's netns directory (/run/netns), its blob cache
# (/var/lib/containers) and maclan's shim state (/run/maclan). Everything is
# removed on exit, even on failure. The last line is "N passed, N failed";
# the exit status is non-zero on any failure.
set -uo pipefail

BIN=${MACLAN_BIN_DIR:-$PWD/bin}
P=mlpod$$
WORK=$(mktemp -d /tmp/maclan-podman.XXXXXX)
IMAGE=localhost/maclan/busybox:e2e
MNTNS=$WORK/ns/mnt
# Directories of the machine that podman's mount namespace covers with
# directories of $WORK; the ones made here (as mount points) are removed.
PRIVATE_DIRS="/var/lib/cni:cni-cache /run/netns:netns /var/lib/containers:containers /run/maclan:maclan-run"
MADE_DIRS=()
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

# pm runs podman in the lab host namespace and the private mount namespace.
# The guard: the shell that becomes podman must be in the lab host network
# namespace (LAB_INO, taken before entering: the mount namespace hides
# /run/netns), and not in this script's or pid 1's (the machine's).
pm() {
	CONTAINERS_CONF=$WORK/containers.conf nsenter --mount="$MNTNS" --net="$LAB_NS" -- sh -c '
		self=$(stat -L -c %i /proc/self/ns/net)
		[ "$self" = "$1" ] || { echo "guard: not in the lab host namespace" >&2; exit 1; }
		for other in "$2" /proc/1/ns/net; do
			[ "$self" != "$(stat -L -c %i "$other" 2>/dev/null)" ] || { echo "guard: in the machine namespace" >&2; exit 1; }
		done
		shift 2
		exec podman --root "$W/storage" --runroot "$W/run" --storage-driver vfs \
			--cgroup-manager cgroupfs --runtime runc "$@"' sh "$LAB_INO" "/proc/$$/ns/net" "$@"
}
export W=$WORK
# maclan run by hand; its commands only read and write files.
maclan() { "$BIN/maclan" "$@"; }
mnet() { maclan network "$1" --conf-dir "$WORK/net.d" --cni-cache-dir "$WORK/cni-cache" "${@:2}"; }
# user SHOWN -- COMMAND...: the walk-through as a user types it: print the
# command as shown, then run COMMAND, its output indented.
user() {
	local shown=$1; shift 2
	printf '\n  $ %s\n' "$shown"
	"$@" 2>&1 | sed 's/^/    /'
	return "${PIPESTATUS[0]}"
}

cleanup() {
	local rc=$?
	set +e
	if [ -e "$MNTNS" ] && [ -n "${LAB_NS:-}" ] && [ -e "$LAB_NS" ]; then
		pm rm -a -f -t 0 >/dev/null 2>&1
	fi
	[ -e "$MNTNS" ] && umount "$MNTNS"
	mountpoint -q "$WORK/ns" && umount "$WORK/ns"
	for n in gw host sw; do ip netns del "$P$n" 2>/dev/null; done
	rm -rf --one-file-system "$WORK"
	for ((i = ${#MADE_DIRS[@]} - 1; i >= 0; i--)); do rmdir "${MADE_DIRS[i]}" 2>/dev/null; done
	[ "$rc" -eq 0 ] || [ "$failed" -gt 0 ] || fail "aborted (exit $rc)"
	printf '\n%d passed, %d failed\n' "$passed" "$failed"
	[ "$failed" -eq 0 ] || exit 1
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || die "the podman e2e needs root"
for f in "$BIN/maclan" "$BIN/maclan-ipam"; do
	[ -x "$f" ] || die "missing $f: run 'make build' (make e2e does)"
done
for c in podman runc busybox nsenter unshare mountpoint; do
	command -v "$c" >/dev/null || die "missing $c: apt-get install podman runc busybox-static util-linux"
done
ldd "$(command -v busybox)" >/dev/null 2>&1 && die "busybox is linked dynamically: apt-get install busybox-static"

say "lab: switch, host (master eth0, runs podman), gateway ($P*)"
set -e # any failed step aborts; the trap tears down what exists
lab_up
LAB_NS=/var/run/netns/${P}host
LAB_INO=$(stat -L -c %i "$LAB_NS")

say "podman's private state in $WORK"
mkdir -p "$WORK/ns" "$WORK/net.d" "$WORK/cni-bin" "$WORK/leases" "$WORK/tmp" "$WORK/rootfs/bin"
for pair in $PRIVATE_DIRS; do
	dir=${pair%%:*}
	mkdir -p "$WORK/${pair#*:}"
	if [ ! -d "$dir" ]; then
		mkdir -p "$dir"
		MADE_DIRS+=("$dir")
	fi
done
# A persistent mount namespace, bound on $WORK/ns/mnt (whose mount must be
# private for unshare to bind it), in which the machine's directories are
# covered by the work directory's.
mount --bind "$WORK/ns" "$WORK/ns"
mount --make-private "$WORK/ns"
touch "$MNTNS"
binds=""
for pair in $PRIVATE_DIRS; do binds="$binds mount --bind $WORK/${pair#*:} ${pair%%:*} &&"; done
unshare --mount="$MNTNS" --propagation private -- sh -c "$binds true"
# The plugins podman runs, from the directory named in containers.conf.
ln -s "$BIN/maclan" "$WORK/cni-bin/maclan"
ln -s "$BIN/maclan-ipam" "$WORK/cni-bin/maclan-ipam"
cat >"$WORK/containers.conf" <<EOF
[containers]
# This machine cannot raise the limits podman would set.
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["$WORK/cni-bin"]
network_config_dir = "$WORK/net.d"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
tmp_dir = "$WORK/tmp"
events_logger = "file"
events_logfile_path = "$WORK/events.log"
EOF
# The image: a root file system holding the static busybox.
cp "$(command -v busybox)" "$WORK/rootfs/bin/busybox"
for app in sh ping ip sleep cat; do ln -s busybox "$WORK/rootfs/bin/$app"; done
tar -C "$WORK/rootfs" -cf "$WORK/busybox.tar" .
set +e
check "podman uses the CNI backend" eval '[ "$(pm info --format "{{.Host.NetworkBackend}}")" = cni ]'
pm import --change 'CMD ["/bin/sh"]' "$WORK/busybox.tar" "$IMAGE" >/dev/null 2>&1 || die "podman import the busybox image"
pass "podman import: $IMAGE"

say "the walk-through, as a user sees it"
user "maclan network create -d macvlan --subnet 198.51.100.0/24 --gateway 198.51.100.1 --ip-range 198.51.100.128/25 --aux-address printer=198.51.100.130 --ipv6 --subnet 2001:db8:100::/64 --gateway 2001:db8:100::1 -o parent=eth0 -o macvlan_mode=bridge lan" -- \
	mnet create -d macvlan --subnet 198.51.100.0/24 --gateway 198.51.100.1 --ip-range 198.51.100.128/25 \
	--aux-address printer=198.51.100.130 --ipv6 --subnet 2001:db8:100::/64 --gateway 2001:db8:100::1 \
	-o parent=eth0 -o macvlan_mode=bridge --data-dir "$WORK/leases" lan ||
	die "maclan network create"
check "maclan network create wrote lan.conflist into podman's directory" test -s "$WORK/net.d/lan.conflist"
out=$(mnet create lan --subnet 10.9.0.0/24 2>&1)
check "a second create of lan is refused: $out" eval '[[ "$out" == *"network with name lan already exists"* ]]'
out=$(mnet create lan2 --subnet 198.51.100.0/25 -o parent=eth0 2>&1)
check "an overlapping subnet on eth0 is refused: $out" eval '[[ "$out" == *"overlaps subnet 198.51.100.0/24 of network lan"* ]]'
out=$(mnet create lan2 --subnet 203.0.113.0/24 --gateway 198.51.100.1 2>&1)
check "a gateway outside the subnet is refused: $out" eval '[[ "$out" == *"no --subnet contains --gateway 198.51.100.1"* ]]'

user "podman network ls" -- pm network ls
check "podman network ls shows lan, driver maclan" eval 'pm network ls --format "{{.Name}} {{.Driver}}" | grep -qx "lan maclan"'
# What podman itself can tell of a network whose driver it does not know:
# the name and driver, no subnets (see README: Coming from Docker).
user "podman network inspect lan" -- pm network inspect lan

user "podman run -d --name web --network lan $IMAGE sleep 3600" -- \
	pm run -d --name web --network lan "$IMAGE" sleep 3600 || die "podman run web"
user "podman run -d --name db --network lan --ip 198.51.100.200 --ip6 2001:db8:100::200 --mac-address 02:42:c6:33:64:c8 $IMAGE sleep 3600" -- \
	pm run -d --name db --network lan --ip 198.51.100.200 --ip6 2001:db8:100::200 --mac-address 02:42:c6:33:64:c8 "$IMAGE" sleep 3600 ||
	die "podman run db"
user "podman exec web ip addr show eth0" -- pm exec web ip addr show eth0
addr() { pm exec "$1" ip -"$2" -o addr show dev eth0 scope global | awk '{print $4}' | cut -d/ -f1; }
mac() { pm exec "$1" cat /sys/class/net/eth0/address; }
WEB4=$(addr web 4) WEB6=$(addr web 6) WEBMAC=$(mac web)
DB4=$(addr db 4) DB6=$(addr db 6) DBMAC=$(mac db)
check "web has IPv4 $WEB4 from --ip-range 198.51.100.128/25, not the aux address" \
	eval '[[ "$WEB4" == 198.51.100.1[2-9][0-9] || "$WEB4" == 198.51.100.2[0-5][0-9] ]] && [ "$WEB4" != 198.51.100.130 ]'
check "web has IPv6 $WEB6 in 2001:db8:100::/64" eval '[[ "$WEB6" == 2001:db8:100::* ]]'
check "db has --ip 198.51.100.200, --ip6 2001:db8:100::200, --mac-address 02:42:c6:33:64:c8" \
	eval '[ "$DB4" = 198.51.100.200 ] && [ "$DB6" = 2001:db8:100::200 ] && [ "$DBMAC" = 02:42:c6:33:64:c8 ]'

ping1() { local who=$1; shift; "$@" ping -c1 -W1 "$dst" >/dev/null 2>&1; }
for dst in "$WEB4" "$WEB6" "$DB4" "$DB6"; do
	check "the gateway pings $dst" poll 10 ping1 gw ip netns exec "${P}gw"
done
for dst in 198.51.100.1 2001:db8:100::1 "$DB4" "$DB6"; do
	check "podman exec web ping $dst" poll 10 ping1 web pm exec web
done
for dst in "$WEB4" "$WEB6"; do
	check "podman exec db ping $dst (sibling)" poll 10 ping1 db pm exec db
done
user "ip neigh (on the gateway)" -- ip -n "${P}gw" neigh show dev eth0
neigh_has() { ip -n "${P}gw" neigh show "$1" dev eth0 | grep -q "lladdr $2"; }
check "the gateway's neighbour table holds web's MAC $WEBMAC for $WEB4 and $WEB6" eval 'neigh_has "$WEB4" "$WEBMAC" && neigh_has "$WEB6" "$WEBMAC"'
check "the gateway's neighbour table holds db's MAC $DBMAC for $DB4 and $DB6" eval 'neigh_has "$DB4" "$DBMAC" && neigh_has "$DB6" "$DBMAC"'
dst=$WEB4 check "without hostShim the host cannot reach web (macvlan parent)" eval '! ping1 host nsenter --net="$LAB_NS" --'

user "maclan network inspect lan -o table" -- mnet inspect lan -o table
user "maclan network inspect lan" -- mnet inspect lan
json=$(mnet inspect lan)
has() { grep -q -- "$1" <<<"$json"; }
check "inspect lists web with its IPv4, IPv6 and MAC" eval 'has "\"Name\": \"web\"" && has "\"IPv4Address\": \"$WEB4/24\"" && has "\"IPv6Address\": \"$WEB6/64\"" && has "\"MacAddress\": \"$WEBMAC\""'
check "inspect lists db with its IPv4, IPv6 and MAC" eval 'has "\"Name\": \"db\"" && has "\"IPv4Address\": \"$DB4/24\"" && has "\"IPv6Address\": \"$DB6/64\"" && has "\"MacAddress\": \"$DBMAC\""'
check "inspect shows the aux address and the ip-range" eval 'has "\"printer\": \"198.51.100.130\"" && has "\"IPRange\": \"198.51.100.128/25\""'
out=$(mnet rm lan 2>&1)
check "maclan network rm lan is refused while containers run: $out" eval '[[ "$out" == *"has active endpoints"* ]] && [ -e "$WORK/net.d/lan.conflist" ]'

user "podman restart web" -- pm restart -t 0 web || fail "podman restart web"
dst=198.51.100.1 check "after restart, web pings the gateway" poll 10 ping1 web pm exec web
leases() { mnet ls -o json | grep -o '"leases": [0-9-]*' | head -1 | awk '{print $2}'; }
WEB4=$(addr web 4) WEB6=$(addr web 6)
check "after restart, inspect shows web at $WEB4 and $WEB6" eval 'mnet inspect lan | grep -q "\"IPv4Address\": \"$WEB4/24\"" && mnet inspect lan | grep -q "\"IPv6Address\": \"$WEB6/64\""'
check "after restart, the network holds 4 leases, 2 per container (none leaked)" eval '[ "$(leases)" = 4 ]'
user "maclan network ls" -- mnet ls

user "podman rm -f web db" -- pm rm -f -t 0 web db
check "after podman rm, the leases are freed" eval '[ "$(leases)" = 0 ] && [ -z "$("$BIN/maclan-ipam" ls --data-dir "$WORK/leases" -o json | grep "\"ip\"")" ]'
user "maclan network rm lan" -- mnet rm lan
check "maclan network rm lan succeeds: the file is gone, podman no longer lists it" \
	eval '[ ! -e "$WORK/net.d/lan.conflist" ] && ! pm network ls --format "{{.Name}}" | grep -qx lan'

say "with --host-shim, the host reaches its containers"
user "maclan network create --subnet 198.51.100.0/24 --gateway 198.51.100.1 --ip-range 198.51.100.128/25 -o parent=eth0 --host-shim lan" -- \
	mnet create --subnet 198.51.100.0/24 --gateway 198.51.100.1 --ip-range 198.51.100.128/25 -o parent=eth0 --host-shim \
	--data-dir "$WORK/leases" lan || die "maclan network create --host-shim"
pm run -d --name app --network lan "$IMAGE" sleep 3600 >/dev/null || die "podman run app"
APP4=$(addr app 4)
dst=$APP4 check "with hostShim the host reaches app at $APP4" poll 10 ping1 host nsenter --net="$LAB_NS" --
user "maclan network inspect lan -o table" -- mnet inspect lan -o table
check "inspect lists the host shim's lease apart" eval 'mnet inspect lan | grep -q "(host shim)"'
pm rm -f -t 0 app >/dev/null
check "the shim goes with the last container" eval '[ -z "$(ip -n "${P}host" -o link show type macvlan)" ]'
check "maclan network rm lan succeeds" mnet rm lan
check "no lease is left in the store" eval '[ -z "$("$BIN/maclan-ipam" ls --data-dir "$WORK/leases" -o json | grep "\"ip\"")" ]'
