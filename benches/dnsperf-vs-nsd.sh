#!/usr/bin/env bash
# popnet dns vs NSD on loopback, same names, same dnsperf load, in one run.
#
# Usage: benches/dnsperf-vs-nsd.sh [SECONDS_PER_ROUND] [ROUNDS]
#
# Both servers get the demo network (examples/single-pop.toml; for NSD as zone files
# with the answers popnet gives an idle network), two workers each (popnet: 2 UDP
# sockets/threads; NSD: server-count 2), rate limiting off. The script first checks that
# both give the same answer section for every query of the mix, then alternates
# throughput rounds (dnsperf flat out), then measures latency percentiles at a fixed
# rate both can sustain. Server CPU per query comes from /proc/<pid>/task/*/schedstat.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
SECS=${1:-15}
ROUNDS=${2:-3}
LAT_QPS=${LAT_QPS:-20000}
POPNET_PORT=5410
NSD_PORT=5411

need_tools dnsperf:dnsperf nsd:nsd dig:bind9-dnsutils

echo "# popnet dns vs NSD (dnsperf, loopback)"
echo
bench_header "benches/dnsperf-vs-nsd.sh $SECS $ROUNDS (LAT_QPS=$LAT_QPS)"
echo "- versions: $(nsd -v 2>&1 | head -1), $(dnsperf -h 2>&1 | grep -m1 Version), popnet $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo

cargo build --release -q -p popnet
WORK=$(mktemp -d)
cleanup() {
    [[ -n "${POPNET_PID:-}" ]] && kill "$POPNET_PID" 2>/dev/null || true
    [[ -f "$WORK/nsd.pid" ]] && kill "$(cat "$WORK/nsd.pid")" 2>/dev/null || true
    sleep 0.3
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- NSD with the same names --------------------------------------------------------
cat >"$WORK/demo.example.zone" <<'ZONE'
$ORIGIN demo.example.
@       3600 IN SOA ns.local.popnet.example. hostmaster.popnet.example. 1 3600 600 604800 60
@       3600 IN NS  ns.local.popnet.example.
@       3600 IN TXT "popnet demo customer"
www       20 IN A    127.0.0.1
www       20 IN AAAA ::1
static    60 IN A    127.0.0.1
static    60 IN AAAA ::1
images  3600 IN CNAME static.demo.example.
ZONE
cat >"$WORK/popnet.example.zone" <<'ZONE'
$ORIGIN popnet.example.
@        3600 IN SOA ns.local.popnet.example. hostmaster.popnet.example. 1 3600 600 604800 60
@        3600 IN NS  ns.local.popnet.example.
ns.local  300 IN A   127.0.0.1
cache.local 300 IN A 127.0.0.1
cache.local 300 IN AAAA ::1
probe.local 300 IN A 127.0.0.1
ZONE
cat >"$WORK/nsd.conf" <<CONF
server:
    ip-address: 127.0.0.1@$NSD_PORT
    server-count: 2
    reuseport: yes
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "$WORK"
    database: ""
    zonelistfile: "$WORK/zone.list"
    xfrdfile: "$WORK/xfrd.state"
    pidfile: "$WORK/nsd.pid"
    logfile: "$WORK/nsd.log"
    verbosity: 0
    hide-version: yes
    minimal-responses: yes
    refuse-any: yes
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: demo.example
    zonefile: demo.example.zone
zone:
    name: popnet.example
    zonefile: popnet.example.zone
CONF
nsd -c "$WORK/nsd.conf"
./target/release/popnet --log warn dns --config examples/single-pop.toml --workers 2 \
    --listen 127.0.0.1:$POPNET_PORT --reports 127.0.0.1:0 --admin 127.0.0.1:0 &
POPNET_PID=$!
for _ in $(seq 50); do
    dig @127.0.0.1 -p $POPNET_PORT +time=1 +tries=1 demo.example SOA >/dev/null 2>&1 &&
        dig @127.0.0.1 -p $NSD_PORT +time=1 +tries=1 demo.example SOA >/dev/null 2>&1 && break
    sleep 0.2
done

# --- The query mix ------------------------------------------------------------------
: >"$WORK/queries"
add() { for _ in $(seq "$1"); do echo "$2 $3" >>"$WORK/queries"; done; }
add 40 www.demo.example A
add 25 static.demo.example A
add 10 static.demo.example AAAA
add 10 images.demo.example A
add 5 demo.example TXT
add 5 demo.example SOA
add 5 nothing.demo.example A

echo "## Same answers"
echo
mismatch=0
while read -r name type; do
    a=$(dig @127.0.0.1 -p $POPNET_PORT +noall +answer +authority "$name" "$type" | sort)
    b=$(dig @127.0.0.1 -p $NSD_PORT +noall +answer +authority "$name" "$type" | sort)
    if [[ "$a" != "$b" ]]; then
        mismatch=1
        echo "MISMATCH for $name $type:"; echo "popnet: $a"; echo "nsd:    $b"
    fi
done < <(sort -u "$WORK/queries")
[[ $mismatch == 0 ]] && echo "Every query of the mix gets the same answer and authority sections from both." || exit 1
echo

nsd_pids() { pgrep -f "nsd -c $WORK/nsd.conf" | tr '\n' ' '; }

run_round() { # name port pids... -> "qps avg_ms cpu_us_per_query"
    local name=$1 port=$2
    shift 2
    local c0 out qps avg q c1
    c0=$(cpu_ns "$@")
    out=$(dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries" -l "$SECS" -c 8 -q 200 2>&1)
    c1=$(cpu_ns "$@")
    qps=$(awk '/Queries per second/ {print $4}' <<<"$out")
    avg=$(awk '/Average Latency/ {print $4 * 1000}' <<<"$out")
    q=$(awk '/Queries completed/ {print $3}' <<<"$out")
    lost=$(awk '/Queries lost/ {print $3}' <<<"$out")
    awk -v n="$name" -v qps="$qps" -v avg="$avg" -v q="$q" -v lost="$lost" -v dc=$((c1 - c0)) \
        'BEGIN { printf "%s %.0f %.3f %.2f %s\n", n, qps, avg, dc / 1000 / q, lost }'
}

echo "## Throughput (dnsperf flat out, 8 clients, 200 outstanding, ${SECS}s rounds, alternating)"
echo
echo "| round | server | queries/s | avg latency ms | server CPU µs/query | lost |"
echo "| --- | --- | --- | --- | --- | --- |"
: >"$WORK/results"
for r in $(seq "$ROUNDS"); do
    for who in popnet nsd; do
        if [[ $who == popnet ]]; then
            line=$(run_round popnet $POPNET_PORT "$POPNET_PID")
        else
            # shellcheck disable=SC2046
            line=$(run_round nsd $NSD_PORT $(nsd_pids))
        fi
        echo "$line" >>"$WORK/results"
        read -r n qps avg cpu lost <<<"$line"
        echo "| $r | $n | $qps | $avg | $cpu | $lost |"
    done
done
echo
pq=$(awk '$1=="popnet"{print $2}' "$WORK/results" | median)
nq=$(awk '$1=="nsd"{print $2}' "$WORK/results" | median)
pc=$(awk '$1=="popnet"{print $4}' "$WORK/results" | median)
nc=$(awk '$1=="nsd"{print $4}' "$WORK/results" | median)

echo "## Latency at a fixed ${LAT_QPS} queries/s (dnsperf -v, every query timed)"
echo
echo "| server | p50 ms | p90 ms | p99 ms | p99.9 ms |"
echo "| --- | --- | --- | --- | --- |"
lat() {
    dnsperf -s 127.0.0.1 -p "$1" -d "$WORK/queries" -l 10 -Q "$LAT_QPS" -c 4 -v 2>/dev/null | latency_percentiles
}
read -r p50 p90 p99 p999 <<<"$(lat $POPNET_PORT)"
echo "| popnet | $p50 | $p90 | $p99 | $p999 |"
read -r n50 n90 n99 n999 <<<"$(lat $NSD_PORT)"
echo "| nsd | $n50 | $n90 | $n99 | $n999 |"
echo
echo "## Ratios (popnet / NSD, medians of the rounds)"
echo
awk -v pq="$pq" -v nq="$nq" -v pc="$pc" -v nc="$nc" -v p99="$p99" -v n99="$n99" 'BEGIN {
    printf "- queries/s: %.0f vs %.0f = **%.2f×**\n", pq, nq, pq / nq
    printf "- server CPU per query: %.2f µs vs %.2f µs = %.2f× (lower is better)\n", pc, nc, pc / nc
    printf "- p99 latency at the fixed rate: %.3f ms vs %.3f ms = %.2f× (lower is better)\n", p99, n99, (n99 > 0 ? p99 / n99 : 0)
}'
