#!/usr/bin/env bash
# Times ADD and DEL of maclan-ipam and of the reference host-local at
# 0, 1,000, 10,000 and 50,000 existing leases (see bench/ipamscale).
# Usage: bench/ipam-scale.sh [extra ipamscale flags, e.g. -rounds 21]
set -euo pipefail
cd "$(dirname "$0")/.."
REF=${REF:-}
if [[ -z $REF ]]; then
	for c in .tools/bin/host-local /opt/cni/bin/host-local; do
		[[ -x $c ]] && REF=$c && break
	done
fi
[[ -n $REF ]] || { echo "no host-local found: run 'make tools' or set REF" >&2; exit 1; }
make -s bin/maclan-ipam
# bench/ is a Go module of its own: build ipamscale there, run it from here
# (its default paths and the ones above are relative to the repository).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go -C bench build -o "$tmp/ipamscale" ./ipamscale
echo "maclan-ipam: $(bin/maclan-ipam version)   reference: $REF   $(nproc) CPUs, $(uname -r)"
# In a network namespace of its own (only lo): the plugins never run in the
# machine's namespace, whose eth0 is a real NIC. Needs root (unshare).
unshare --net "$tmp/ipamscale" -ours bin/maclan-ipam -ref "$REF" "$@"
