#!/usr/bin/env bash
# Time from `popctl config push` to the last box switched, for trees of N config daemons
# on loopback (median of PUSHES pushes per N).
#
# Usage: benches/configd-push.sh [PUSHES] [N...]        (default: 10 pushes, N = 10 50)
#
# For each N: N `popnet configd` processes (release build) on 127.0.0.1, in a tree of
# fan-out 3 (box i controls boxes 3i+1..3i+3; 10 boxes are three levels, 50 five), all
# started from a signed version 1 of the demo network with a [configd] section. Then
# PUSHES pushes of versions 2, 3, ... each signed beforehand. For each push: the time
# from just before `popctl config push` starts to the latest switch time the boxes
# report (`last_switch_ms` of `popctl --json config push`: every box stamps its switch
# with its clock, the same clock here), and the time until popctl exits (PREPARE and
# COMMIT both gathered back up the tree). A push that does not switch every box stops
# the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
PUSHES=${1:-10}
shift || true
NS=("${@:-10 50}")
# shellcheck disable=SC2206
NS=(${NS[*]})
need_tools jq:jq
T=${CARGO_TARGET_DIR:-target}

echo "# popctl config push: time to the last box switched (loopback)"
echo
bench_header "benches/configd-push.sh $PUSHES ${NS[*]}"
echo "- popnet $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo
cargo build --release -q -p popnet -p popctl
POPNET=$T/release/popnet
POPCTL=$T/release/popctl

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# N distinct free ports: all held open together while they are picked, so none repeats.
free_ports() {
    python3 -c 'import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

"$POPCTL" config keygen --out "$WORK/admin.pem" --name bench >"$WORK/admin.toml" 2>/dev/null
"$POPCTL" config demo >"$WORK/demo.toml"

echo "| boxes | levels | pushes | median to last switch (ms) | min | max | median until popctl exits (ms) |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for N in "${NS[@]}"; do
    DIR=$WORK/n$N
    mkdir -p "$DIR"
    read -r -a PORTS <<<"$(free_ports "$N")"
    TREE=$DIR/tree.toml
    {
        printf '\n[configd]\nmasters = ["b0"]\ntimeout = "10s"\n'
        for ((i = 0; i < N; i++)); do
            printf '\n[[configd.boxes]]\nname = "b%d"\naddress = "127.0.0.1:%d"\n' "$i" "${PORTS[$i]}"
            [[ $i == 0 ]] && printf 'pop = "local"\n'
            kids=()
            for ((c = 3 * i + 1; c <= 3 * i + 3 && c < N; c++)); do kids+=("\"b$c\""); done
            printf 'controls = [%s]\n' "$(
                IFS=,
                echo "${kids[*]}"
            )"
        done
    } >"$TREE"
    levels=0
    for ((k = N - 1; ; k = (k - 1) / 3)); do
        levels=$((levels + 1))
        ((k == 0)) && break
    done
    for ((v = 1; v <= PUSHES + 1; v++)); do
        awk -v v="$v" -v admins="$WORK/admin.toml" '
            /^version = / && !done { print "version = " v; done = 1; next }
            /^\[probes\]/ { while ((getline l < admins) > 0) print l; print "" }
            { print }' "$WORK/demo.toml" >"$DIR/v$v.toml"
        cat "$TREE" >>"$DIR/v$v.toml"
        "$POPCTL" config sign --key "$WORK/admin.pem" "$DIR/v$v.toml" 2>/dev/null
    done
    for ((i = 0; i < N; i++)); do
        "$POPNET" --log warn configd --name "b$i" --state "$DIR/state-b$i" \
            --bootstrap "$DIR/v1.toml" 2>>"$DIR/configd.log" &
        PIDS+=($!)
    done
    for ((i = 0; i < N; i++)); do
        until (echo >"/dev/tcp/127.0.0.1/${PORTS[$i]}") 2>/dev/null; do sleep 0.05; done
    done
    SWITCH=()
    EXIT=()
    for ((v = 2; v <= PUSHES + 1; v++)); do
        t0=$(date +%s%3N)
        if ! "$POPCTL" --json config push --key "$DIR/../admin.pem" "$DIR/v$v.toml" >"$DIR/push$v.json"; then
            echo "push of version $v to $N boxes failed:" >&2
            cat "$DIR/push$v.json" "$DIR/configd.log" >&2
            exit 1
        fi
        t1=$(date +%s%3N)
        last=$(jq -r '.last_switch_ms' "$DIR/push$v.json")
        switched=$(jq '[.decision[] | select(.outcome == "ok" and .status.running.version == '"$v"')] | length' "$DIR/push$v.json")
        if [[ $switched != "$N" ]]; then
            echo "push of version $v switched $switched of $N boxes: see $DIR/push$v.json" >&2
            exit 1
        fi
        SWITCH+=($((last - t0)))
        EXIT+=($((t1 - t0)))
    done
    med=$(printf '%s\n' "${SWITCH[@]}" | median)
    min=$(printf '%s\n' "${SWITCH[@]}" | sort -n | head -1)
    max=$(printf '%s\n' "${SWITCH[@]}" | sort -n | tail -1)
    medx=$(printf '%s\n' "${EXIT[@]}" | median)
    echo "| $N | $levels | $PUSHES | $med | $min | $max | $medx |"
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
done
