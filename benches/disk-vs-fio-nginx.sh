#!/usr/bin/env bash
# Disk hits: popnet's disk tier vs a raw O_DIRECT sequential read of the same store file (fio), and vs nginx serving the same objects from its disk cache; one run.
#
# Usage: benches/disk-vs-fio-nginx.sh [SECONDS_PER_RUN] [ROUNDS] [OBJECTS]
#
# One demo origin (its own process) serves OBJECTS objects of 1 MiB (default 800).
# popnet runs `popnet cache` with a 1 GiB disk tier (64 MiB segments) and 64 MiB of
# RAM, promotion off (disk_promote_hits = 0): every object is fetched once (written
# to disk), then popnet is restarted, so RAM is empty and every hit is read from the
# device (O_DIRECT, io_uring ReadFixed, each 1 MiB chunk checksummed before it is
# sent). fio then reads the same store file sequentially with O_DIRECT (io_uring,
# 1 MiB blocks, queue depth = the client connections): the ratio popnet / fio says how
# much of the device's bandwidth disk hits get (goal: >= 0.8 for 1 MiB objects).
# nginx (proxy_cache on the same filesystem, sendfile, open_file_cache) is warmed with
# the same objects and measured twice: as is (its cache files sit in the page cache,
# so after the first pass it serves from RAM), and inside a memory cgroup of 256 MiB,
# where the 800 MiB working set does not fit and it must read the disk again. The
# load is wrk (2 threads, 16 connections, a Lua script walking the objects) on the
# same cores as the servers. Every server gets as many workers as there are cores.
set -euo pipefail
[[ -n ${BENCH_DEBUG:-} ]] && set -x
cd "$(dirname "$0")/.."
source benches/lib.sh
SECS=${1:-10}
ROUNDS=${2:-3}
OBJECTS=${3:-800}
CONNS=16
CORES=$(nproc)
ORIGIN=127.0.0.1:18281
POPNET=127.0.0.1:18280
POPNET_ADMIN=127.0.0.1:18290
NGINX=127.0.0.1:18282
HOST=static.demo.example

need_tools wrk:wrk fio:fio nginx:nginx curl:curl python3:python3
systemctl stop nginx 2>/dev/null || true

cargo build --release -q -p popnet --bin popnet
cargo build --release -q -p cache-engine --example bench_runner
RUNNER=${CARGO_TARGET_DIR:-target}/release/examples/bench_runner
POPNET_BIN=${CARGO_TARGET_DIR:-target}/release/popnet

# On the disk, not a tmpfs: O_DIRECT and the page cache are what is measured.
WORK=$(mktemp -d /var/tmp/popnet-disk-bench.XXXXXX)
PIDS=()
POPNET_PID=
CG=/sys/fs/cgroup/memory/popnet-bench-nginx
cleanup() {
    for p in "${PIDS[@]}" $POPNET_PID; do kill "$p" 2>/dev/null || true; done
    [[ -f $WORK/nginx.pid ]] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    sleep 0.5
    [[ -d $CG ]] && rmdir "$CG" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "# Disk hits: popnet disk tier vs fio (O_DIRECT) vs nginx disk cache"
echo
bench_header "benches/disk-vs-fio-nginx.sh $SECS $ROUNDS $OBJECTS"
echo "- versions: $(nginx -v 2>&1 | cut -d/ -f2), $(fio --version), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), popnet $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "- store: $WORK on $(df -T "$WORK" | awk 'NR == 2 {print $2 " (" $1 ")"}'); objects: $OBJECTS × 1 MiB; wrk: 2 threads, $CONNS connections"
echo

$RUNNER origin $ORIGIN 2>"$WORK/origin.log" &
PIDS+=($!)

cat >"$WORK/popnet.toml" <<CONF
[network]
name = "bench"
version = 1
zone = "popnet.example"
[probes]
report_key = "b931d3d715699ac5770f3adaa5de1107460e972c72dfc63c6498486c5ae09ce5"
[[pops]]
name = "bench"
region = "local"
[pops.dns]
listen = ["127.0.0.1:0"]
reports = "127.0.0.1:0"
admin = "127.0.0.1:0"
[pops.cache]
addresses = ["127.0.0.1"]
listen = ["$POPNET"]
admin = "$POPNET_ADMIN"
ram_bytes = 67_108_864
max_object_bytes = 16_777_216
disk_path = "$WORK/popnet.store"
disk_bytes = 1_073_745_920
disk_segment_bytes = 67_108_864
disk_promote_hits = 0
[[customers]]
name = "demo"
zones = ["demo.example"]
[[customers.origins]]
name = "o"
addresses = ["${ORIGIN%:*}"]
port = ${ORIGIN#*:}
[[customers.domains]]
name = "$HOST"
kind = "static"
CONF
start_popnet() {
    $POPNET_BIN --log warn cache --config "$WORK/popnet.toml" --workers "$CORES" 2>>"$WORK/popnet.log" &
    POPNET_PID=$!
    for _ in $(seq 200); do
        curl -sf -o /dev/null "http://$POPNET_ADMIN/health" && return 0
        sleep 0.05
    done
    echo "popnet did not start:" >&2
    cat "$WORK/popnet.log" >&2
    exit 1
}
disk_stat() { # field of the disk tier in /stats
    curl -s "http://$POPNET_ADMIN/stats" | python3 -c "import json, sys; print(next(t for t in json.load(sys.stdin)['tiers'] if t['tier'] == 'disk')['$1'])"
}
start_popnet

paths=()
for i in $(seq "$OBJECTS"); do paths+=("/d/$i/1m?max-age=86400"); done
{
    echo "local paths = {"
    for p in "${paths[@]}"; do echo "  \"$p\","; done
    echo "}"
    echo 'local i = 0'
    echo 'setup = function(thread) end'
    echo 'init = function(args) i = math.random(#paths) end'
    echo 'request = function() i = i % #paths + 1; return wrk.format("GET", paths[i], {["Host"] = "'$HOST'"}) end'
} >"$WORK/walk.lua"

# Fill the disk tier (each object once), wait until all are written, restart.
for p in "${paths[@]}"; do curl -s -o /dev/null -H "Host: $HOST" "http://$POPNET$p"; done
for _ in $(seq 600); do
    [[ $(disk_stat objects) -ge $OBJECTS ]] && break
    sleep 0.1
done
kill -TERM $POPNET_PID
wait $POPNET_PID 2>/dev/null || true
T0=$(date +%s%N)
start_popnet
T1=$(date +%s%N)
STORE_OBJECTS=$(disk_stat objects)
echo "## popnet disk tier after a restart"
echo
echo "- objects on disk: $STORE_OBJECTS, restart until serving: $(((T1 - T0) / 1000000)) ms"
h=$(curl -s -D - -o "$WORK/one" -H "Host: $HOST" "http://$POPNET${paths[0]}" | tr -d '\r' | grep -i '^x-cache' || true)
o=$(curl -s -H "Host: $HOST" "http://$ORIGIN${paths[0]}" | sha256sum | cut -c1-16)
echo "- first request after the restart: ${h:-?}; body sha256 $(sha256sum <"$WORK/one" | cut -c1-16), origin's $o"
echo

# nginx, warmed with the same objects.
mkdir -p "$WORK/nginx-cache" "$WORK/nginx-tmp"
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
    proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=popnet:64m max_size=4g inactive=1h use_temp_path=off;
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
start_nginx() { # [cgroup]
    if [[ -n ${1:-} ]]; then
        sh -c "echo \$\$ > $1/cgroup.procs && exec nginx -c $WORK/nginx.conf"
    else
        nginx -c "$WORK/nginx.conf"
    fi
    for _ in $(seq 100); do
        curl -sf -o /dev/null -H "Host: $HOST" "http://$NGINX${paths[0]}" && return 0
        sleep 0.05
    done
}
stop_nginx() {
    kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    for _ in $(seq 100); do [[ -f $WORK/nginx.pid ]] || break; sleep 0.05; done
    sleep 0.3
}
start_nginx
for p in "${paths[@]}"; do curl -s -o /dev/null -H "Host: $HOST" "http://$NGINX$p"; done
echo "- nginx warm: $(curl -s -D - -o /dev/null -H "Host: $HOST" "http://$NGINX${paths[0]}" | tr -d '\r' | grep -i '^x-cache' || echo '?')"
echo
stop_nginx
CGROUP_OK=
if [[ -d /sys/fs/cgroup/memory ]] && mkdir -p "$CG" 2>/dev/null; then
    echo $((256 << 20)) >"$CG/memory.limit_in_bytes" && CGROUP_OK=1
fi

fio_run() { # bytes/s of an O_DIRECT sequential read of the popnet store
    fio --name=seq --filename="$WORK/popnet.store" --readonly --rw=read --direct=1 --bs=1M \
        --ioengine=io_uring --iodepth=$CONNS --size=1G --time_based --runtime="$SECS" \
        --output-format=json 2>/dev/null |
        python3 -c "import json, sys; print(json.load(sys.stdin)['jobs'][0]['read']['bw_bytes'])"
}
wrk_run() { # addr -> "requests/s bytes/s errors"
    local out
    out=$(wrk -t2 -c$CONNS -d"${SECS}s" -s "$WORK/walk.lua" "http://$1" 2>&1)
    local rps reqs
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr ' ' '_' | tr '\n' ' ')
    echo "$rps $(awk -v r="$rps" 'BEGIN {printf "%.0f", r * 1048576}') ${errs:--}"
}
RESULTS=$WORK/results
: >"$RESULTS"
for round in $(seq "$ROUNDS"); do
    echo "popnet $round $(wrk_run $POPNET) $(disk_stat hits) $(disk_stat checksum_failures)" >>"$RESULTS"
    echo "fio $round - $(fio_run) -" >>"$RESULTS"
    start_nginx
    echo "nginx $round $(wrk_run $NGINX)" >>"$RESULTS"
    stop_nginx
    if [[ -n $CGROUP_OK ]]; then
        sync
        echo 3 >/proc/sys/vm/drop_caches
        start_nginx "$CG"
        echo "nginx-256MiB $round $(wrk_run $NGINX)" >>"$RESULTS"
        stop_nginx
    fi
done

mib() { awk -v b="$1" 'BEGIN {printf "%.0f", b / 1048576}'; }
echo "## Rounds ($SECS s each, alternating)"
echo
echo "| round | server | requests/s | MiB/s | errors |"
echo "| --- | --- | --- | --- | --- |"
while read -r name round rps bps errs _; do
    echo "| $round | $name | $rps | $(mib "$bps") | $errs |"
done <"$RESULTS"
echo
med() { awk -v s="$1" -v c="$2" '$1 == s {print $c}' "$RESULTS" | median; }
P_BPS=$(med popnet 4)
P_RPS=$(med popnet 3)
F_BPS=$(med fio 4)
N_RPS=$(med nginx 3)
echo "## Medians and ratios"
echo
echo "- popnet disk hits: $P_RPS requests/s, $(mib "$P_BPS") MiB/s (disk hits counted by the tier: $(disk_stat hits), checksum failures: $(disk_stat checksum_failures))"
echo "- fio O_DIRECT sequential read, 1 MiB blocks, queue depth $CONNS: $(mib "$F_BPS") MiB/s"
echo "- **popnet disk hits / fio = $(awk -v a="$P_BPS" -v b="$F_BPS" 'BEGIN {printf "%.2f", a / b}')** (goal >= 0.8)"
echo "- nginx (page cache): $N_RPS requests/s; popnet / nginx = $(awk -v a="$P_RPS" -v b="$N_RPS" 'BEGIN {printf "%.2f", a / b}')"
if [[ -n $CGROUP_OK ]]; then
    C_RPS=$(med nginx-256MiB 3)
    echo "- nginx in a 256 MiB memory cgroup (must read the disk): $C_RPS requests/s; popnet / nginx = $(awk -v a="$P_RPS" -v b="$C_RPS" 'BEGIN {printf "%.2f", a / b}')"
fi
