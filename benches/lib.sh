# Helpers shared by the benchmark scripts (source it).

# Prints the header every benchmark starts with: date, machine, the command.
bench_header() {
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, kernel $(uname -r)"
    echo "- command: $*"
}

# Installs Debian packages for the given "command:package" pairs that are missing.
need_tools() {
    local missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
    done
    if ((${#missing[@]})); then
        apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null
    fi
}

# On-CPU nanoseconds of every thread of the given pids (the scheduler's clock; tick
# sampling reads 0 for processes that sleep at every tick).
cpu_ns() {
    local t=0 f
    for p in "$@"; do
        for f in /proc/"$p"/task/*/schedstat; do
            [[ -r $f ]] && t=$((t + $(cut -d' ' -f1 "$f")))
        done
    done
    echo $t
}

# Busy time of the whole machine in nanoseconds (all CPUs, /proc/stat, 10 ms ticks).
machine_busy_ns() {
    awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8 + $9; printf "%.0f\n", busy * 10000000 }' /proc/stat
}

# Median of numbers on stdin.
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# p50 p90 p99 p99.9 in ms of the per-query latencies `dnsperf -v` prints on stdin.
latency_percentiles() {
    awk '$1==">" {print $NF * 1000}' | sort -n |
        awk '{a[NR]=$1} END {printf "%.3f %.3f %.3f %.3f\n", a[int(NR*0.5)], a[int(NR*0.9)], a[int(NR*0.99)], a[int(NR*0.999)]}'
}
