# Sourced by the e2e scripts (run.sh, podman.sh): their test-line helpers.
# Each script counts its own PASS and FAIL lines and ends with
# "N passed, N failed".
passed=0
failed=0

say() { printf '\n== [%3ds] %s\n' "$SECONDS" "$*"; }
pass() { passed=$((passed + 1)); printf 'PASS  %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL  %s\n' "$*"; }
# check DESCRIPTION COMMAND...: one test line.
check() {
	local what=$1; shift
	if "$@"; then pass "$what"; else fail "$what"; return 1; fi
}
# die: a set-up step failed; nothing after it can be tested.
die() { fail "$*"; exit 1; }
# poll SECONDS COMMAND...: retry until it succeeds or the deadline passes
# (a hang guard, not a timing threshold).
poll() {
	local deadline=$((SECONDS + $1)); shift
	until "$@"; do
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 0.2 # polling interval, not a synchronisation
	done
}

# lab_up builds the LAN of the e2e scripts from namespaces named after $P:
# a switch (bridge br0), a host whose eth0 is the macvlan master
# (198.51.100.2) and a gateway (198.51.100.1, 2001:db8:100::1). Each script
# tears it down in its own exit trap.
lab_up() {
	ip netns add "${P}sw" &&
	ip netns add "${P}host" &&
	ip netns add "${P}gw" &&
	ip -n "${P}sw" link add br0 type bridge stp_state 0 mcast_snooping 0 &&
	ip -n "${P}sw" link set br0 up || return 1
	local end
	for end in host gw; do
		ip -n "${P}sw" link add "p-$end" type veth peer name eth0 netns "$P$end" &&
		ip -n "${P}sw" link set "p-$end" master br0 up &&
		ip netns exec "$P$end" sysctl -qw net.ipv6.conf.eth0.accept_dad=0 &&
		ip -n "$P$end" link set eth0 up &&
		ip -n "$P$end" link set lo up || return 1
	done
	ip -n "${P}gw" addr add 198.51.100.1/24 dev eth0 &&
	ip -n "${P}gw" addr add 2001:db8:100::1/64 dev eth0 nodad &&
	ip -n "${P}host" addr add 198.51.100.2/24 dev eth0 &&
	ip -n "${P}host" route add default via 198.51.100.1
}
