#!/usr/bin/env bash
# popnet cache vs nginx proxy_cache vs Varnish on loopback: same origin, same objects, same wrk load, one run.
#
# Usage: benches/cache-vs-nginx-varnish.sh [SECONDS_PER_RUN] [ROUNDS]
#
# One demo origin (cache-engine's DemoOrigin, its own process) serves every object;
# each cache fetches from it, and is warmed (every object requested twice through it)
# before it is measured, so only hits are timed. Objects: 100 of 1 KiB, 20 of 1 MiB,
# all with Cache-Control max-age=3600. Loads: 1 KiB objects with 50 connections and
# 1 MiB objects with 16 connections (wrk, 2 threads, --latency, a Lua script walking
# the object set). Every server gets as many workers as the machine has cores (popnet:
# event loops; nginx: worker_processes; Varnish: thread pools), access logging off,
# production settings (nginx: sendfile, open_file_cache, keep-alive; Varnish: malloc
# storage). Server CPU per request comes from /proc/<pid>/task/*/schedstat (the
# scheduler's run time, not tick-sampled utime), resident memory from VmRSS after the
# run, summed over every process of a server.
set -euo pipefail
[[ -n ${BENCH_DEBUG:-} ]] && set -x
cd "$(dirname "$0")/.."
SECS=${1:-15}
ROUNDS=${2:-3}
CORES=$(nproc)
ORIGIN=127.0.0.1:18181
POPNET=127.0.0.1:18180
POPNET_ADMIN=127.0.0.1:18190
NGINX=127.0.0.1:18182
VARNISH=127.0.0.1:18183
HOST=static.demo.example

need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v varnishd >/dev/null 2>&1 || need+=(varnish)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
if ((${#need[@]})); then
    echo "installing ${need[*]}" >&2
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi
# Debian starts the packaged services on install: stop them, they are not measured.
systemctl stop nginx varnish 2>/dev/null || true

cargo build --release -q -p cache-engine --example bench_runner
RUNNER=target/release/examples/bench_runner

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ -f $WORK/nginx.pid ]] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    pkill -F "$WORK/varnish.pid" 2>/dev/null || true
    sleep 0.5
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "# popnet cache vs nginx proxy_cache vs Varnish (wrk, loopback)"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $CORES cores, $(uname -r)"
echo "- command: benches/cache-vs-nginx-varnish.sh $SECS $ROUNDS"
echo "- versions: $(nginx -v 2>&1 | cut -d/ -f2), $(varnishd -V 2>&1 | head -1 | sed 's/.*(\(varnish-[^ ]*\).*/\1/'), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), popnet $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "- workers: $CORES each; wrk: 2 threads on the same $CORES cores"
echo

# --- the origin and the three caches ------------------------------------------------
$RUNNER origin $ORIGIN 2>"$WORK/origin.log" &
PIDS+=($!)
$RUNNER cache $POPNET $POPNET_ADMIN $ORIGIN "$CORES" 2>"$WORK/popnet.log" &
POPNET_PID=$!
PIDS+=($POPNET_PID)

mkdir -p "$WORK/nginx-cache" "$WORK/nginx-tmp"
# nginx workers run as www-data (as packaged): let them use the cache directories.
chmod 755 "$WORK"
chown -R www-data "$WORK/nginx-cache" "$WORK/nginx-tmp" 2>/dev/null || true
cat >"$WORK/nginx.conf" <<CONF
worker_processes $CORES;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    open_file_cache max=10000 inactive=60s;
    open_file_cache_valid 60s;
    client_body_temp_path $WORK/nginx-tmp;
    proxy_temp_path $WORK/nginx-tmp;
    fastcgi_temp_path $WORK/nginx-tmp;
    uwsgi_temp_path $WORK/nginx-tmp;
    scgi_temp_path $WORK/nginx-tmp;
    proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=popnet:64m max_size=2g inactive=1h use_temp_path=off;
    upstream origin { server $ORIGIN; keepalive 32; }
    server {
        listen $NGINX reuseport;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_cache popnet;
            proxy_cache_lock on;
            proxy_cache_key \$host\$request_uri;
            add_header X-Cache \$upstream_cache_status;
        }
    }
}
CONF
nginx -c "$WORK/nginx.conf"

varnishd -a $VARNISH -b $ORIGIN -s malloc,1G -n "$WORK/varnish" -P "$WORK/varnish.pid" \
    -p thread_pools="$CORES" -p thread_pool_min=100 -p thread_pool_max=1000 >/dev/null

for _ in $(seq 100); do
    ok=1
    for a in $POPNET $NGINX $VARNISH; do
        curl -s -o /dev/null -H "Host: $HOST" "http://$a/obj/1k?max-age=3600" || ok=0
    done
    ((ok)) && break
    sleep 0.1
done

# --- the object set, warmed through every cache ------------------------------------
small=() large=()
for i in $(seq 100); do small+=("/s/$i/1k?max-age=3600"); done
for i in $(seq 20); do large+=("/l/$i/1m?max-age=3600"); done
lua() { # a wrk script walking the given paths round-robin
    local f=$1
    shift
    {
        echo "local paths = {"
        for p in "$@"; do echo "  \"$p\","; done
        echo "}"
        echo 'local i = 0'
        echo 'request = function() i = i % #paths + 1; return wrk.format("GET", paths[i], {["Host"] = "'$HOST'"}) end'
    } >"$f"
}
lua "$WORK/small.lua" "${small[@]}"
lua "$WORK/large.lua" "${large[@]}"
for a in $POPNET $NGINX $VARNISH; do
    for p in "${small[@]}" "${large[@]}"; do
        for _ in 1 2; do curl -s -o /dev/null -H "Host: $HOST" "http://$a$p"; done
    done
done
echo "## Warm caches"
echo
for a in $POPNET $NGINX $VARNISH; do
    h=$(curl -s -D - -o /dev/null -H "Host: $HOST" "http://$a${small[0]}" | tr -d '\r' | grep -iE '^(HTTP/|x-cache|age|x-varnish)' | tr '\n' ' ' || true)
    b=$(curl -s -H "Host: $HOST" "http://$a${large[0]}" | sha256sum | cut -c1-16)
    echo "- $a: ${h:-?} 1 MiB body sha256 $b"
done
echo

cpu_ns() {
    local t=0 f
    for p in "$@"; do
        for f in /proc/"$p"/task/*/schedstat; do
            [[ -r $f ]] && t=$((t + $(cut -d' ' -f1 "$f" 2>/dev/null || echo 0)))
        done
    done
    echo $t
}
rss_kb() {
    local t=0 p
    for p in "$@"; do
        t=$((t + $(awk '/VmRSS/ {print $2}' /proc/"$p"/status 2>/dev/null || echo 0)))
    done
    echo $t
}
pids_of() {
    case $1 in
    popnet) echo $POPNET_PID ;;
    nginx) echo "$(cat "$WORK/nginx.pid") $(pgrep -P "$(cat "$WORK/nginx.pid")" | tr '\n' ' ')" ;;
    varnish) pgrep -f "varnishd.*$WORK/varnish" | tr '\n' ' ' ;;
    esac
}
addr_of() {
    case $1 in
    popnet) echo $POPNET ;;
    nginx) echo $NGINX ;;
    varnish) echo $VARNISH ;;
    esac
}
to_ms() { # wrk latency (e.g. 512.00us, 1.20ms, 2.01s) -> ms
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else printf "%s", v }'
}

RESULTS=$WORK/results
: >"$RESULTS"
run() { # load conns script server round
    local load=$1 conns=$2 script=$3 name=$4 round=$5
    local pids out rps p50 p99 reqs c0 c1 rss
    pids=$(pids_of "$name")
    # shellcheck disable=SC2086
    c0=$(cpu_ns $pids)
    out=$(wrk -t2 -c"$conns" -d"${SECS}s" --latency -s "$script" "http://$(addr_of "$name")" 2>&1)
    # shellcheck disable=SC2086
    c1=$(cpu_ns $pids)
    # shellcheck disable=SC2086
    rss=$(rss_kb $pids)
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
    echo "$load $name $round $rps $p50 $p99 $(awk -v d=$((c1 - c0)) -v r="$reqs" 'BEGIN {printf "%.2f", d / 1000 / r}') $((rss / 1024)) ${errs:-}" >>"$RESULTS"
}
for round in $(seq "$ROUNDS"); do
    for name in popnet nginx varnish; do
        run 1k 50 "$WORK/small.lua" $name "$round"
        run 1m 16 "$WORK/large.lua" $name "$round"
    done
done

for load in 1k 1m; do
    if [[ $load == 1k ]]; then
        echo "## 1 KiB objects, 50 connections ($SECS s per run, $ROUNDS rounds, servers alternating)"
    else
        echo "## 1 MiB objects, 16 connections ($SECS s per run, $ROUNDS rounds, servers alternating)"
    fi
    echo
    echo "| round | server | requests/s | p50 ms | p99 ms | server CPU µs/request | RSS MiB | errors |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
    awk -v l=$load '$1 == l {e = ""; for (i = 9; i <= NF; i++) e = e " " $i; printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $3, $2, $4, $5, $6, $7, $8, (e == "" ? "-" : e)}' "$RESULTS"
    echo
    echo "Medians over the rounds, and ratios popnet / peer (requests/s: higher is better; latency, CPU, memory: lower is better):"
    echo
    echo "| server | requests/s | p50 ms | p99 ms | CPU µs/req | RSS MiB | popnet rps ratio | p50 ratio | p99 ratio | CPU ratio | RSS ratio |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    med() { awk -v l=$load -v s="$1" -v c="$2" '$1 == l && $2 == s {print $c}' "$RESULTS" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
    declare -A M
    for s in popnet nginx varnish; do
        for c in 4 5 6 7 8; do M[$s$c]=$(med $s $c); done
    done
    for s in popnet nginx varnish; do
        awk -v s=$s -v r="${M[${s}4]}" -v a="${M[${s}5]}" -v b="${M[${s}6]}" -v cpu="${M[${s}7]}" -v m="${M[${s}8]}" \
            -v pr="${M[popnet4]}" -v pa="${M[popnet5]}" -v pb="${M[popnet6]}" -v pc="${M[popnet7]}" -v pm="${M[popnet8]}" \
            'function q(x, y) { return (y > 0 ? sprintf("%.2f×", x / y) : "-") }
            BEGIN { printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", s, r, a, b, cpu, m, q(pr, r), q(pa, a), q(pb, b), q(pc, cpu), q(pm, m) }'
    done
    echo
done
