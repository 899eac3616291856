#!/usr/bin/env bash
# make demo: a simulated LAN in network namespaces, and three containers
# attached to it with cnitool, the reference CNI client, through maclan and
# maclan-ipam and the shipped conflist-examples/10-maclan.conflist.
#
#   switch ns: bridge br0 (the LAN)
#   host ns:   eth0 on br0, the macvlan master; cnitool and the plugins run here
#   gw ns:     eth0 on br0, the router, 198.51.100.1 and 2001:db8:100::1
#   c1..c3:    one namespace per container
#
# Nothing runs in the machine's own network namespace, and the only traffic is
# between these namespaces. Everything is removed on exit, even on failure,
# unless --keep is given; then `demo.sh --down PREFIX` removes it.
#
#   demo.sh [--keep] | --down PREFIX
set -euo pipefail

BIN=${MACLAN_BIN_DIR:-$PWD/bin}
TOOLS=${MACLAN_TOOLS_DIR:-$PWD/.tools/bin}
EXAMPLE=${MACLAN_DEMO_CONFLIST:-$PWD/conflist-examples/10-maclan.conflist}
CNITOOL=$TOOLS/cnitool
CTRS="c1 c2 c3"

usage() { echo "usage: $0 [--keep] | --down PREFIX" >&2; exit 2; }
KEEP=
DOWN=
case "${1:-}" in
"") ;;
--keep) KEEP=1 ;;
--down) [ -n "${2:-}" ] || usage; DOWN=$2 ;;
*) usage ;;
esac
P=${DOWN:-mld$$} # namespaces are $P-sw, $P-host, $P-gw, $P-c1, ...
WORK=/tmp/maclan-demo-$P

if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B= N=; fi
say() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }

[ "$(id -u)" = 0 ] || { echo "make demo needs root (network namespaces)" >&2; exit 1; }
for f in "$BIN/maclan" "$BIN/maclan-ipam" "$CNITOOL"; do
	[ -x "$f" ] || { echo "missing $f: run 'make' and 'make tools' first" >&2; exit 1; }
done

# in_host runs a command in the lab's host namespace, and refuses to run it
# anywhere else: the machine's own eth0 is a real NIC.
in_host() {
	ip netns exec "$P-host" sh -c '
		self=$(stat -L -c %i /proc/self/ns/net)
		[ "$self" = "$(stat -L -c %i /var/run/netns/$1)" ] &&
			[ "$self" != "$(stat -L -c %i /proc/1/ns/net 2>/dev/null)" ] && # unreadable in some sandboxes
			[ "$self" != "$(stat -L -c %i /proc/$2/ns/net)" ] || {
			echo "refusing to run a plugin outside the lab host namespace" >&2; exit 1; }
		shift 2; exec "$@"' sh "$P-host" "$$" "$@"
}
cni() { in_host env CNI_PATH="$BIN" NETCONFPATH="$WORK/net.d" "$CNITOOL" "$@"; }
NET=maclan

teardown() {
	set +e
	for n in $(ip netns list | cut -d' ' -f1 | grep "^$P-c"); do
		cni del "$NET" "/var/run/netns/$n" >/dev/null 2>&1
	done
	for n in $(ip netns list | cut -d' ' -f1 | grep "^$P-"); do ip netns del "$n"; done
	rm -rf "$WORK"
}

if [ -n "$DOWN" ]; then
	[[ "$P" =~ ^mld[0-9]+$ ]] || { echo "--down: $P is not a demo prefix (mldNNN)" >&2; exit 2; }
	[ -e "/var/run/netns/$P-host" ] || { echo "no demo lab $P" >&2; exit 1; }
	teardown
	echo "removed demo lab $P"
	exit 0
fi
on_exit() {
	local rc=$?
	if [ -n "$KEEP" ] && [ "$rc" = 0 ]; then return; fi
	teardown
	[ "$rc" = 0 ] || echo "demo failed (exit $rc); the lab is removed" >&2
}
trap on_exit EXIT

say "Building the LAN: switch $P-sw, host $P-host (master eth0), gateway $P-gw"
for n in sw host gw; do ip netns add "$P-$n"; done
ip -n "$P-sw" link add br0 type bridge stp_state 0
ip -n "$P-sw" link set br0 up
for end in host gw; do
	ip -n "$P-sw" link add "p-$end" type veth peer name eth0 netns "$P-$end"
	ip -n "$P-sw" link set "p-$end" master br0 up
	ip netns exec "$P-$end" sysctl -qw net.ipv6.conf.eth0.accept_dad=0
	ip -n "$P-$end" link set eth0 up
	ip -n "$P-$end" link set lo up
done
# The gateway is a router that learns neighbours from the containers'
# gratuitous ARP and unsolicited neighbour advertisements.
ip netns exec "$P-gw" sysctl -qw net.ipv4.conf.eth0.arp_accept=1 net.ipv6.conf.all.forwarding=1
ip netns exec "$P-gw" sysctl -qw net.ipv6.conf.eth0.accept_untracked_na=1 2>/dev/null || true # kernels < 5.18
ip -n "$P-gw" addr add 198.51.100.1/24 dev eth0
ip -n "$P-gw" addr add 2001:db8:100::1/64 dev eth0 nodad
ip -n "$P-host" addr add 198.51.100.2/24 dev eth0
ip -n "$P-host" route add default via 198.51.100.1

mkdir -p "$WORK/net.d" "$WORK/leases"
# The shipped example, with the lease store moved into the demo's directory.
sed 's|"type": "maclan-ipam",|"type": "maclan-ipam", "dataDir": "'"$WORK/leases"'",|' \
	"$EXAMPLE" >"$WORK/net.d/10-maclan.conflist"
grep -q '"dataDir"' "$WORK/net.d/10-maclan.conflist" || { echo "cannot set dataDir in $EXAMPLE" >&2; exit 1; }
NET=$(sed -n 's/^ *"name": "\([^"]*\)".*/\1/p' "$WORK/net.d/10-maclan.conflist" | head -1)
say "Network \"$NET\" from $(basename "$EXAMPLE") (dataDir set to $WORK/leases)"
cat "$WORK/net.d/10-maclan.conflist"

say "Attaching containers: cnitool add $NET /var/run/netns/$P-c1 ... c3"
for c in $CTRS; do
	ip netns add "$P-$c"
	ip -n "$P-$c" link set lo up
	cni add "$NET" "/var/run/netns/$P-$c" >"$WORK/$c.json"
done

ip4() { ip -n "$P-$1" -4 -o addr show dev eth0 scope global | awk '{print $4}' | cut -d/ -f1; }
ip6() { ip -n "$P-$1" -6 -o addr show dev eth0 scope global | awk '{print $4}' | cut -d/ -f1; }
mac() { ip -n "$P-$1" -o link show dev eth0 | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p'; }
mode() { ip -n "$P-$1" -d -o link show dev eth0 | sed -n 's/.*\(macvlan mode [a-z]*\).*/\1/p'; }
row() { printf '  %-9s %-12s %-6s %-18s %-15s %-20s %s\n' "$@"; }
row CONTAINER NETNS IFACE MAC IPV4 IPV6 MODE
for c in $CTRS; do
	row "$c" "$P-$c" eth0 "$(mac "$c")" "$(ip4 "$c")" "$(ip6 "$c")" "$(mode "$c")"
done

say "The gateway's neighbour table (the containers announced themselves on ADD)"
ip -n "$P-gw" neigh show dev eth0 | grep -v FAILED | sort

# ping1 NS DST: one echo, retried while neighbours settle (a hang guard of a
# few seconds, not a timing threshold).
ping1() {
	local i
	for i in 1 2 3 4 5; do
		ip netns exec "$P-$1" ping -n -q -c1 -W1 "$2" >/dev/null 2>&1 && return 0
	done
	return 1
}
FAILS=0
try() {
	local from=$1 to=$2 label=$3
	if ping1 "$from" "$to"; then printf '  %-5s -> %-24s ok\n' "$from" "$label"
	else printf '  %-5s -> %-24s FAILED\n' "$from" "$label"; FAILS=$((FAILS + 1)); fi
}
say "Traffic on the LAN (bridge mode: siblings on the master talk inside the host)"
for c in $CTRS; do
	try "$c" 198.51.100.1 "gw 198.51.100.1"
	try "$c" 2001:db8:100::1 "gw 2001:db8:100::1"
done
try c1 "$(ip4 c2)" "c2 $(ip4 c2)"
try c2 "$(ip4 c3)" "c3 $(ip4 c3)"
try c3 "$(ip4 c1)" "c1 $(ip4 c1)"
try c1 "$(ip6 c3)" "c3 $(ip6 c3)"
try gw "$(ip4 c2)" "c2 $(ip4 c2)"

say "maclan-ipam ls: the leases of this host"
"$BIN/maclan-ipam" ls --data-dir "$WORK/leases"

if [ -n "$KEEP" ]; then
	say "The lab is up (--keep). Explore it:"
	cat <<EOF
  ip netns list | grep $P-
  ip netns exec $P-c1 ip -d addr show eth0
  ip netns exec $P-c1 ping -c3 $(ip4 c2)
  ip -n $P-gw neigh show dev eth0
  $BIN/maclan-ipam ls --data-dir $WORK/leases
  # one more container:
  ip netns add $P-c4 && ip netns exec $P-host env CNI_PATH=$BIN NETCONFPATH=$WORK/net.d \\
      $CNITOOL add $NET /var/run/netns/$P-c4
Remove it with:
  $0 --down $P
EOF
	[ "$FAILS" = 0 ] || exit 1
	exit 0
fi

say "cnitool del: every container leaves, and its leases go"
for c in $CTRS; do
	cni del "$NET" "/var/run/netns/$P-$c"
	ip netns del "$P-$c"
done
"$BIN/maclan-ipam" ls --data-dir "$WORK/leases"
say "Done: the lab is removed on exit"
[ "$FAILS" = 0 ]
