#!/usr/bin/env bash
# On a veth between two namespaces, with dnsperf in the client namespace, in one run:
# popnet's XDP path vs popnet's userspace path vs Knot DNS in XDP mode.
#
# Usage (root): benches/xdp-veth-dnsperf.sh [SECONDS_PER_ROUND] [ROUNDS]
#
# All three serve the same names (the hwtests XDP network; Knot from zone files holding
# the answers popnet gives the client's view) on 192.0.2.1:53; dnsperf asks from
# 198.51.100.7. The client end of the veth runs a pass-everything XDP program (a veth
# delivers XDP_TX replies only to a peer that runs XDP) and the server end does UDP GRO
# forwarding (without it a veth hands datagrams from local sockets straight to the stack,
# past XDP). Rounds alternate between the servers. CPU per query is the whole machine's
# busy time (/proc/stat) over the queries answered, with and without dnsperf's own
# (schedstat, sampled while it runs): the XDP paths spend theirs in softirq, which no
# server process is charged for, so only the machine's total tells their cost.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
SECS=${1:-10}
ROUNDS=${2:-3}
LAT_QPS=${LAT_QPS:-20000}

need_tools dnsperf:dnsperf knotd:knot dig:bind9-dnsutils ethtool:ethtool
echo "# DNS over a veth: popnet XDP vs popnet userspace vs Knot DNS XDP (dnsperf)"
echo
bench_header "benches/xdp-veth-dnsperf.sh $SECS $ROUNDS (LAT_QPS=$LAT_QPS)"
echo "- versions: $(knotd --version), $(dnsperf -h 2>&1 | grep -m1 Version), popnet $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo

cargo build --release -q -p popnet
POPNET=$PWD/target/release/popnet
S=pnbench-s C=pnbench-c VS=pnbs0 VC=pnbc0
WORK=$(mktemp -d)
SERVER_PID=""
PASS_PID=""
stop_server() {
    [[ -n "$SERVER_PID" ]] && { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }
    SERVER_PID=""
    # Knot leaves its XDP program attached when it exits.
    ip -n "$S" link set dev "$VS" xdp off 2>/dev/null || true
}
cleanup() {
    stop_server
    [[ -n "$PASS_PID" ]] && kill "$PASS_PID" 2>/dev/null || true
    ip netns del "$S" 2>/dev/null || true
    ip netns del "$C" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

ip netns del "$S" 2>/dev/null || true
ip netns del "$C" 2>/dev/null || true
ip netns add "$S"
ip netns add "$C"
ip link add "$VS" netns "$S" type veth peer name "$VC" netns "$C"
for ns in "$S" "$C"; do ip -n "$ns" link set lo up; done
ip -n "$S" link set "$VS" up
ip -n "$C" link set "$VC" up
ip -n "$S" addr add 192.0.2.1/24 dev "$VS"
ip -n "$S" route add 198.51.100.0/24 dev "$VS"
ip -n "$C" addr add 198.51.100.7/32 dev "$VC"
ip -n "$C" route add 192.0.2.0/24 dev "$VC" src 198.51.100.7
ip netns exec "$S" ethtool -K "$VS" rx-udp-gro-forwarding on >/dev/null
ip netns exec "$C" "$POPNET" --log warn xdp-pass "$VC" &
PASS_PID=$!

# The network: the hwtests XDP config, served on the lab address only.
python3 - "$WORK/popnet.toml" <<'PY'
import re, sys
src = open("hwtests/src/lib.rs").read()
cfg = src[src.index('r#"') + 3:src.index('"#')]
cfg = cfg.replace('listen = ["192.0.2.1:53", "[2001:db8::1]:53"]', 'listen = ["192.0.2.1:53"]')
open(sys.argv[1], "w").write(cfg)
PY

# The query mix.
: >"$WORK/queries"
add() { for _ in $(seq "$1"); do echo "$2 $3" >>"$WORK/queries"; done; }
add 50 www.shop.example A
add 20 img.shop.example A
add 10 img.shop.example AAAA
add 10 mail.shop.example A
add 5 shop.example MX
add 5 shop.example TXT

start_popnet() { # extra args...
    ip netns exec "$S" "$POPNET" --log warn dns --config "$WORK/popnet.toml" --workers 2 "$@" &
    SERVER_PID=$!
    for _ in $(seq 100); do
        ip netns exec "$C" dig @192.0.2.1 +time=1 +tries=1 shop.example SOA >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "popnet did not start" >&2
    exit 1
}

# Knot's zone files: the answers popnet gives the client's view (east).
write_knot_zones() {
    mkdir -p "$WORK/knot"
    : >"$WORK/knot/shop.example.zone"
    while read -r name type; do
        ip netns exec "$C" dig @192.0.2.1 -b 198.51.100.7 +noall +answer "$name" "$type" >>"$WORK/knot/shop.example.zone"
    done < <(sort -u "$WORK/queries")
    ip netns exec "$C" dig @192.0.2.1 +noall +answer shop.example SOA >>"$WORK/knot/shop.example.zone"
    ip netns exec "$C" dig @192.0.2.1 +noall +answer shop.example NS >>"$WORK/knot/shop.example.zone"
    sort -u -o "$WORK/knot/shop.example.zone" "$WORK/knot/shop.example.zone"
    cat >"$WORK/knot/knot.conf" <<CONF
server:
    rundir: "$WORK/knot"
    user: root:root
    listen: 192.0.2.1@53
    udp-workers: 2
    tcp-workers: 1
    background-workers: 1
xdp:
    listen: $VS@53
    udp: on
log:
  - target: stderr
    any: error
database:
    storage: "$WORK/knot"
zone:
  - domain: shop.example
    file: "$WORK/knot/shop.example.zone"
    storage: "$WORK/knot"
CONF
}

start_knot() {
    ip netns exec "$S" knotd -c "$WORK/knot/knot.conf" &
    SERVER_PID=$!
    for _ in $(seq 100); do
        ip netns exec "$C" dig @192.0.2.1 +time=1 +tries=1 shop.example SOA >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "knotd did not start" >&2
    exit 1
}

answers() { # the answer section of every query of the mix, sorted
    while read -r name type; do
        ip netns exec "$C" dig @192.0.2.1 -b 198.51.100.7 +noall +answer "$name" "$type" | sort
    done < <(sort -u "$WORK/queries")
}

round() { # name -> "name qps avg_ms machine_cpu_us lost server_cpu_us"
    local name=$1 b0 b1 out dp last=0 now
    b0=$(machine_busy_ns)
    ip netns exec "$C" dnsperf -s 192.0.2.1 -d "$WORK/queries" -l "$SECS" -c 8 -q 200 >"$WORK/dnsperf.out" 2>&1 &
    dp=$!
    # dnsperf's own CPU: sampled until it exits (the last sample misses < 0.1 s of it).
    while kill -0 "$dp" 2>/dev/null; do
        now=$(cpu_ns "$dp")
        ((now > last)) && last=$now
        sleep 0.1
    done
    wait "$dp" || true
    b1=$(machine_busy_ns)
    out=$(cat "$WORK/dnsperf.out")
    local qps avg q lost
    qps=$(awk '/Queries per second/ {print $4}' <<<"$out")
    avg=$(awk '/Average Latency/ {print $4 * 1000}' <<<"$out")
    q=$(awk '/Queries completed/ {print $3}' <<<"$out")
    lost=$(awk '/Queries lost/ {print $3}' <<<"$out")
    awk -v n="$name" -v qps="$qps" -v avg="$avg" -v q="$q" -v lost="$lost" -v busy=$((b1 - b0)) -v gen="$last" \
        'BEGIN { printf "%s %.0f %.3f %.2f %s %.2f\n", n, qps, avg, busy / 1000 / q, lost, (busy - gen) / 1000 / q }'
}

lat() {
    ip netns exec "$C" dnsperf -s 192.0.2.1 -d "$WORK/queries" -l 10 -Q "$LAT_QPS" -c 4 -v 2>/dev/null | latency_percentiles
}

# Same answers everywhere.
start_popnet --no-xdp
write_knot_zones
want=$(answers)
stop_server
start_popnet --xdp "$VS"
[[ "$(answers)" == "$want" ]] || { echo "popnet XDP answers differ from userspace"; exit 1; }
stop_server
start_knot
got=$(answers)
stop_server
if [[ "$got" != "$want" ]]; then
    echo "Knot's answers differ:"; diff <(echo "$want") <(echo "$got") || true
    exit 1
fi
echo "## Same answers"
echo
echo "Every query of the mix gets the same answer section from all three."
echo

echo "## Throughput (dnsperf flat out, 8 clients, 200 outstanding, ${SECS}s rounds, alternating)"
echo
echo "| round | server | queries/s | avg latency ms | machine CPU µs/query | of which not dnsperf | lost |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
: >"$WORK/results"
for r in $(seq "$ROUNDS"); do
    for who in popnet-xdp popnet-userspace knot-xdp; do
        case $who in
        popnet-xdp) start_popnet --xdp "$VS" ;;
        popnet-userspace) start_popnet --no-xdp ;;
        knot-xdp) start_knot ;;
        esac
        line=$(round "$who")
        stop_server
        echo "$line" >>"$WORK/results"
        read -r n qps avg cpu lost srv <<<"$line"
        echo "| $r | $n | $qps | $avg | $cpu | $srv | $lost |"
    done
done
echo

echo "## Latency at a fixed ${LAT_QPS} queries/s (dnsperf -v, every query timed)"
echo
echo "| server | p50 ms | p90 ms | p99 ms | p99.9 ms |"
echo "| --- | --- | --- | --- | --- |"
for who in popnet-xdp popnet-userspace knot-xdp; do
    case $who in
    popnet-xdp) start_popnet --xdp "$VS" ;;
    popnet-userspace) start_popnet --no-xdp ;;
    knot-xdp) start_knot ;;
    esac
    read -r a b c d <<<"$(lat)"
    stop_server
    echo "| $who | $a | $b | $c | $d |"
    echo "$who $c" >>"$WORK/p99"
done
echo

m() { awk -v w="$1" -v col="$2" '$1==w {print $col}' "$WORK/results" | median; }
echo "## Ratios (medians of the rounds)"
echo
awk -v xq="$(m popnet-xdp 2)" -v uq="$(m popnet-userspace 2)" -v kq="$(m knot-xdp 2)" \
    -v xc="$(m popnet-xdp 6)" -v uc="$(m popnet-userspace 6)" -v kc="$(m knot-xdp 6)" \
    -v xl="$(awk '$1=="popnet-xdp"{print $2}' "$WORK/p99")" -v ul="$(awk '$1=="popnet-userspace"{print $2}' "$WORK/p99")" -v kl="$(awk '$1=="knot-xdp"{print $2}' "$WORK/p99")" 'BEGIN {
    printf "- queries/s: popnet XDP %.0f, popnet userspace %.0f, Knot XDP %.0f\n", xq, uq, kq
    printf "- CPU per query outside dnsperf: popnet XDP %.2f µs, popnet userspace %.2f µs, Knot XDP %.2f µs\n", xc, uc, kc
    printf "- popnet XDP / popnet userspace: **%.2f×** queries/s, %.2f× CPU per query, %.2f× p99 latency\n", xq / uq, xc / uc, xl / ul
    printf "- popnet XDP / Knot XDP: **%.2f×** queries/s, %.2f× CPU per query, %.2f× p99 latency\n", xq / kq, xc / kc, xl / kl
}'
