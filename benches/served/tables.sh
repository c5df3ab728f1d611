#!/usr/bin/env bash
# Served write latency and throughput, Megastore next to etcd, on loopback.
#
#   benches/served/tables.sh table1     # 3 full replicas vs a 3-member etcd
#   benches/served/tables.sh table2     # Megastore with injected wide-area latency
#
# Table 1: each system runs as 3 processes on loopback with fsync on, driven by the
# same tool (served-bench) with 100-byte values, each client writing its own entity
# (etcd: its own key): 1 client; 64 clients over 64 groups; 64 clients in one group.
# Megastore's one-group case writes through one replica (writers of one group at
# several replicas would take turns for each log position).
# Megastore's coordinator leases live in a separate one-member etcd.
#
# Table 2: replicas in regions a, b, c with round trips a:b=20, a:c=40, b:c=80 ms
# (injected between the processes), one client writing and reading at region a;
# once with three full replicas and once with the farthest one a witness.
#
# Peak RSS: the servers' VmHWM from /proc at the end of each system's runs; the
# client's from /usr/bin/time -v. Every process and file is gone when it ends.
set -euo pipefail
cd "$(dirname "$0")/../.."
what=${1:-table1}
ops1=${OPS1:-5000}
ops64=${OPS64:-20000}
work=$(mktemp -d)
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --locked -q -p tools --bin megastore --bin served-bench
bench=target/release/served-bench
etcd=$(command -v etcd || { echo "etcd is missing: run .ci/install-etcd" >&2; exit 1; })

# Waits (up to 30 s) until file $1 contains $2.
wait_for() {
    for _ in $(seq 1 300); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timed out waiting for '$2' in $1:" >&2
    tail -5 "$1" >&2
    exit 1
}

# Starts an etcd cluster named $1 of members on client ports $2... (peer port +1).
start_etcd() {
    local name=$1
    shift
    local cluster="" port
    for port in "$@"; do
        cluster+="${cluster:+,}$name-$port=http://127.0.0.1:$((port + 1))"
    done
    for port in "$@"; do
        "$etcd" --name "$name-$port" --data-dir "$work/$name-$port" \
            --listen-client-urls "http://127.0.0.1:$port" \
            --advertise-client-urls "http://127.0.0.1:$port" \
            --listen-peer-urls "http://127.0.0.1:$((port + 1))" \
            --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            >"$work/$name-$port.log" 2>&1 &
        pids+=($!)
    done
    for port in "$@"; do
        wait_for "$work/$name-$port.log" "ready to serve client requests"
    done
}

# Starts the replicas of config $work/$1.toml; their pids go to $work/$1.pids.
start_megastore() {
    local config=$work/$1.toml i=0
    : >"$work/$1.pids"
    while grep -q "^id = $i\$" "$config"; do
        target/release/megastore serve --replica "$i" --config "$config" \
            >"$work/$1-$i.log" 2>&1 &
        pids+=($!)
        echo $! >>"$work/$1.pids"
        i=$((i + 1))
    done
    for ((j = 0; j < i; j++)); do wait_for "$work/$1-$j.log" "^ready"; done
}

# Writes config $work/$1.toml: replicas "kind:region" $3..., injected latency $2.
megastore_config() {
    local name=$1 latency=$2 i=0 spec
    shift 2
    {
        echo "etcd = \"127.0.0.1:22379\""
        echo "lock_prefix = \"/$name\""
        [[ -n $latency ]] && echo "inject_latency = \"$latency\""
        for spec in "$@"; do
            echo "[[replica]]"
            echo "id = $i"
            echo "kind = \"${spec%%:*}\""
            echo "region = \"${spec#*:}\""
            echo "address = \"127.0.0.1:$((27401 + i))\""
            echo "dir = \"$name-data-$i\""
            i=$((i + 1))
        done
    } >"$work/$name.toml"
}

# The peak RSS (VmHWM) of the pids in file $1, in MB, space-separated.
peak_rss() {
    local pid out=""
    while read -r pid; do
        out+="$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status") "
    done <"$1"
    echo "${out% } MB"
}

# The CPU time (user + system) the pids in file $1 have used, in clock ticks.
cpu_ticks() {
    local pid total=0
    while read -r pid; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done <"$1"
    echo "$total"
}

# Runs served-bench with "$@" against the servers whose pids are in file $1, printing
# its result line, its own peak RSS and, unless $1 is "-", the servers' CPU time per
# write (warm-up writes included) and how many of the machine's cores they kept busy.
run_bench() {
    local pids=$1 ticks=0 start writes
    shift
    [[ $pids != - ]] && ticks=$(cpu_ticks "$pids")
    start=$(date +%s.%N)
    /usr/bin/time -v "$bench" "$@" 2>"$work/time.log" | tee "$work/bench.out" | sed 's/^/  /'
    grep -o "Maximum resident set size (kbytes): [0-9]*" "$work/time.log" |
        awk '{printf "  (client peak RSS %.1f MB)\n", $NF / 1024}'
    [[ $pids == - ]] && return
    writes=$(grep -o "^[0-9]* writes" "$work/bench.out" | awk '{print $1 + int($1 / 10)}')
    awk -v t=$(($(cpu_ticks "$pids") - ticks)) -v hz="$(getconf CLK_TCK)" -v n="$writes" \
        -v start="$start" -v end="$(date +%s.%N)" -v cores="$(nproc)" \
        'BEGIN { printf "  (servers: %.0f µs CPU per write, %.1f of %d cores busy)\n", t / hz / n * 1e6, t / hz / (end - start), cores }'
}

# The lock service for Megastore's coordinators.
start_etcd locks 22379

case $what in
table1)
    megastore_config table1 "" full:a full:a full:a
    start_megastore table1
    m="127.0.0.1:27401,127.0.0.1:27402,127.0.0.1:27403"
    echo "== Megastore, 3 full replicas (one process each)"
    echo "1 client:"; run_bench "$work/table1.pids" --system megastore --endpoints "$m" --ops "$ops1"
    echo "64 clients over 64 groups:"; run_bench "$work/table1.pids" --system megastore --endpoints "$m" --clients 64 --groups 64 --ops "$ops64"
    echo "64 clients on one group (one replica):"; run_bench "$work/table1.pids" --system megastore --endpoints 127.0.0.1:27401 --clients 64 --groups 1 --ops "$ops64"
    echo "servers' peak RSS: $(peak_rss "$work/table1.pids")"
    kill $(cat "$work/table1.pids")

    start_etcd bench 23379 23389 23399
    pgrep -f "name bench-" >"$work/etcd.pids"
    e="127.0.0.1:23379,127.0.0.1:23389,127.0.0.1:23399"
    echo "== etcd $("$etcd" --version | head -1 | awk '{print $3}'), 3 members"
    echo "1 client:"; run_bench "$work/etcd.pids" --system etcd --endpoints "$e" --ops "$ops1"
    echo "64 clients over 64 keys:"; run_bench "$work/etcd.pids" --system etcd --endpoints "$e" --clients 64 --groups 64 --ops "$ops64"
    echo "64 clients on one group's keys:"; run_bench "$work/etcd.pids" --system etcd --endpoints "$e" --clients 64 --groups 1 --ops "$ops64"
    echo "servers' peak RSS: $(peak_rss "$work/etcd.pids")"
    ;;
table2)
    latency="a:b=20,a:c=40,b:c=80"
    ops=${OPS_WAN:-200}
    n=0
    for kinds in "full:a full:b full:c" "full:a full:b witness:c"; do
        n=$((n + 1))
        name=wan$n
        megastore_config "$name" "$latency" $kinds
        start_megastore "$name"
        echo "== Megastore, replicas ${kinds// /, }; round trips $latency ms; client at a"
        run_bench - --system megastore --endpoints 127.0.0.1:27401 --ops "$ops" --reads "$ops"
        echo "servers' peak RSS: $(peak_rss "$work/$name.pids")"
        kill $(cat "$work/$name.pids")
        for pid in $(cat "$work/$name.pids"); do
            while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        done
    done
    ;;
*)
    echo "usage: $0 table1|table2" >&2
    exit 2
    ;;
esac
