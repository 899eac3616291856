#!/usr/bin/env bash
# make demo: a simulated LAN in network namespaces, and containers attached to
# it through cnitool, the real CNI client, with maclan and maclan-ipam.
#
#   switch ns: bridge br0 (the LAN)
#   host ns:   eth0 on br0, the macvlan master; cnitool and the plugins run here
#   gw ns:     eth0 on br0, the router, 198.51.100.1 and 2001:db8:100::1
#   ctr1..3:   one namespace per container
#
# Nothing runs in the machine's own network namespace, and the only traffic is
# between these namespaces. Everything is removed on exit, even on failure.
set -euo pipefail

BIN=${MACLAN_BIN_DIR:-$PWD/bin}
TOOLS=${MACLAN_TOOLS_DIR:-$PWD/.tools/bin}
P=mldemo$$
WORK=$(mktemp -d /tmp/maclan-demo.XXXXXX)
CNITOOL=$TOOLS/cnitool

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
	set +e
	for c in 1 2 3; do
		[ -e "/var/run/netns/${P}c$c" ] && in_host env CNI_PATH="$BIN" NETCONFPATH="$WORK/net.d" \
			"$CNITOOL" del lan "/var/run/netns/${P}c$c" >/dev/null 2>&1
	done
	for n in c1 c2 c3 gw host sw; do ip netns del "$P$n" 2>/dev/null; done
	rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "make demo needs root (network namespaces)" >&2; exit 1; }
for f in "$BIN/maclan" "$BIN/maclan-ipam" "$CNITOOL"; do
	[ -x "$f" ] || { echo "missing $f: run 'make' and 'make tools' first" >&2; exit 1; }
done

# in_host runs a command in the lab's host namespace, and refuses to run it
# anywhere else: the machine's own eth0 is a real NIC.
in_host() {
	ip netns exec "${P}host" sh -c '
		[ "$(readlink /proc/self/ns/net)" != "$(readlink /proc/1/ns/net)" ] || {
			echo "refusing to run a plugin in the machine'"'"'s own namespace" >&2; exit 1; }
		exec "$@"' sh "$@"
}

say "Building the LAN: switch, host (master eth0), gateway"
ip netns add "${P}sw"; ip netns add "${P}host"; ip netns add "${P}gw"
ip -n "${P}sw" link add br0 type bridge
ip -n "${P}sw" link set br0 up
for end in host gw; do
	ip link add "${P}$end" type veth peer name "${P}${end}p"
	ip link set "${P}$end" netns "${P}$end"
	ip link set "${P}${end}p" netns "${P}sw"
	ip -n "${P}$end" link set "${P}$end" name eth0
	ip -n "${P}sw" link set "${P}${end}p" master br0 up
	ip -n "${P}$end" link set eth0 up
	ip -n "${P}$end" link set lo up
done
ip netns exec "${P}gw" sysctl -qw net.ipv6.conf.eth0.accept_dad=0
ip -n "${P}gw" addr add 198.51.100.1/24 dev eth0
ip -n "${P}gw" addr add 2001:db8:100::1/64 dev eth0
ip -n "${P}host" addr add 198.51.100.2/24 dev eth0
ip -n "${P}host" route add default via 198.51.100.1

mkdir -p "$WORK/net.d"
cat >"$WORK/net.d/10-lan.conflist" <<CONF
{
  "cniVersion": "1.0.0",
  "cniVersions": ["1.0.0", "1.1.0"],
  "name": "lan",
  "plugins": [{
    "type": "maclan",
    "mode": "bridge",
    "ipam": {
      "type": "maclan-ipam",
      "dataDir": "$WORK/leases",
      "ranges": [
        [{"subnet": "198.51.100.0/24", "rangeStart": "198.51.100.100", "rangeEnd": "198.51.100.199", "gateway": "198.51.100.1"}],
        [{"subnet": "2001:db8:100::/64", "gateway": "2001:db8:100::1"}]
      ],
      "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    }
  }]
}
CONF
say "Network configuration (the master defaults to the host's default-route interface, eth0)"
cat "$WORK/net.d/10-lan.conflist"

for c in 1 2 3; do
	ip netns add "${P}c$c"
	say "cnitool add lan ctr$c"
	in_host env CNI_PATH="$BIN" NETCONFPATH="$WORK/net.d" \
		"$CNITOOL" add lan "/var/run/netns/${P}c$c" >"$WORK/ctr$c.json"
	ip -n "${P}c$c" -br addr show dev eth0
	ip -n "${P}c$c" -d link show dev eth0 | grep -o 'macvlan mode [a-z]*'
done

ctr_ip() { ip -n "${P}c$1" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1; }
say "Traffic on the LAN"
ip netns exec "${P}c1" ping -c1 -W2 198.51.100.1 >/dev/null && echo "ctr1 -> gateway 198.51.100.1: ok"
ip netns exec "${P}c1" ping -6 -c1 -W2 2001:db8:100::1 >/dev/null && echo "ctr1 -> gateway 2001:db8:100::1: ok"
ip netns exec "${P}c1" ping -c1 -W2 "$(ctr_ip 2)" >/dev/null && echo "ctr1 -> ctr2 $(ctr_ip 2): ok (bridge mode)"
ip netns exec "${P}gw" ping -c1 -W2 "$(ctr_ip 3)" >/dev/null && echo "gateway -> ctr3 $(ctr_ip 3): ok"
say "The gateway's neighbour table (the containers announced themselves)"
ip -n "${P}gw" neigh show dev eth0

say "maclan-ipam ls: the leases on this host"
"$BIN/maclan-ipam" ls --data-dir "$WORK/leases"

for c in 1 2 3; do
	say "cnitool del lan ctr$c"
	in_host env CNI_PATH="$BIN" NETCONFPATH="$WORK/net.d" "$CNITOOL" del lan "/var/run/netns/${P}c$c"
	ip netns del "${P}c$c"
done
say "After DEL: leases left"
"$BIN/maclan-ipam" ls --data-dir "$WORK/leases"
say "Done: the lab is removed on exit"
