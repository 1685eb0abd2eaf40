#!/usr/bin/env bash
# How many service targets one `popnet probe` keeps on a 1 s interval, and its CPU.
#
# Usage: benches/probe-capacity.sh [SECONDS] [N...]      (default: 10 s, N = 100 1000 5000)
#
# For each N: N customer origins with the default check (TCP connect), spread over 50
# local listeners that accept and close; `popnet probe` (release build, default
# --max-concurrent) probes them every second and sends its reports to the driver
# (probe/examples/capacity.rs), which counts, per target and per whole second, the
# entries saying "up". After 3 s of warm-up it measures for SECONDS: the probe
# process's CPU from /proc/<pid>/task/*/schedstat (the scheduler's clock; tick-based
# utime reads wrong on this VM), CPU per round (one target, one check, one report
# entry), and the share of target-seconds with a round that passed.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
SECS=${1:-10}
shift || true
NS=("${@:-100 1000 5000}")

echo "# popnet probe capacity (TCP-connect targets, 1 s interval, loopback)"
echo
bench_header "benches/probe-capacity.sh $SECS ${NS[*]}"
echo "- popnet $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo
cargo build --release -q -p popnet
cargo build --release -q -p probe --example capacity
# shellcheck disable=SC2068
target/release/examples/capacity target/release/popnet "$SECS" ${NS[@]}
