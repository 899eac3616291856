#!/usr/bin/env bash
# make bench: maclan + maclan-ipam against the reference macvlan + host-local,
# run from the integration lab's host namespace (integration/bench_test.go),
# then docs/benchmarks.md and docs/ipam-scale.png from the samples
# (bench/report). Needs root, the built binaries and `make tools`.
#
# Sizes (defaults in brackets): MACLAN_BENCH_SEQ [200] sequential containers,
# MACLAN_BENCH_DUAL [10] dual-stack rounds, MACLAN_BENCH_PAR [100] parallel
# ADDs per round, MACLAN_BENCH_PAR_ROUNDS [3], MACLAN_BENCH_TRACE [30] traced
# calls, MACLAN_BENCH_IPAM_SIZES [0,1000,10000,50000],
# MACLAN_BENCH_IPAM_ROUNDS [7]. MACLAN_BENCH_RUN filters the workloads
# (go test -run syntax, e.g. 'TestBench/(sequential|parallel)').
# MACLAN_BENCH_KEEP=DIR keeps the raw samples there. MACLAN_BENCH_WRAP="strace -f
# -o FILE" (or perf stat ...) runs every plugin under that command, for analysis.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MACLAN_BIN_DIR:-$PWD/bin}
TOOLS=${MACLAN_TOOLS_DIR:-$PWD/.tools/bin}
work=${MACLAN_BENCH_KEEP:-}
if [[ -z $work ]]; then
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
work=$(cd "$work" && pwd) # absolute: the Go programs are built in bench/
export MACLAN_BENCH_IPAM_ROUNDS=${MACLAN_BENCH_IPAM_ROUNDS:-7} # keeps make bench under 10 minutes here
# bench/ is a Go module of its own (gonum stays out of the plugins' go.mod):
# build its programs there, run them from here.
go -C bench build -o "$work/ipamscale" ./ipamscale
MACLAN_BENCH_OUT=$work/bench.json MACLAN_BENCH_IPAMSCALE=$work/ipamscale \
MACLAN_BIN_DIR=$BIN MACLAN_TOOLS_DIR=$TOOLS \
	go test -tags integration -count=1 -timeout 30m -v \
	-run "${MACLAN_BENCH_RUN:-TestBench}" ./integration/ 2>&1 | tee "$work/test.log" |
	grep --line-buffered -Ev '^(=== (RUN|PAUSE|CONT)|\s+--- (PASS|SKIP))' || true
grep -q '^ok' "$work/test.log" || { echo "bench: a workload failed (see above)" >&2; exit 1; }
[[ -s $work/bench.json ]] || { echo "bench: no samples written" >&2; exit 1; }
if [[ -z ${MACLAN_BENCH_NOREPORT:-} ]]; then
	go -C bench build -o "$work/report" ./report
	"$work/report" -in "$work/bench.json" -md docs/benchmarks.md -png docs/ipam-scale.png
fi
