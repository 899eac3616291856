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
