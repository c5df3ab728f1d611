#!/usr/bin/env bash
# MutateRow/ReadRows throughput through Google's Python client: our server (fsync on
# every commit, data on disk) and Google's in-memory emulator, same script, same machine.
#   benches/grpc/compare.sh [rows]
# Needs the venv `.ci/compat` creates (target/compat-venv) and `cbtemulator` from the
# Google Cloud SDK (`gcloud beta emulators bigtable start` runs the same binary).
set -euo pipefail
cd "$(dirname "$0")/../.."
rows=${1:-20000}
python=target/compat-venv/bin/python
emulator=${CBTEMULATOR:-$(dirname "$(readlink -f "$(command -v gcloud)")")/../platform/bigtable-emulator/cbtemulator}
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build --release --locked -q -p tools --bin bigtable-server
target/release/bigtable-server --data-dir "$work/data" --listen 127.0.0.1:0 \
    --address-file "$work/ours" >"$work/ours.log" 2>&1 &
pids+=($!)
"$emulator" -host 127.0.0.1 -port 0 >"$work/emulator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    [[ -f $work/ours ]] && grep -q "running on" "$work/emulator.log" && break
    sleep 0.1
done
emulator_address=$(grep -o '127.0.0.1:[0-9]*' "$work/emulator.log" | head -1)
for target in "ours=$(cat "$work/ours")" "emulator=$emulator_address"; do
    echo "== ${target%%=*} (${target#*=})"
    BIGTABLE_EMULATOR_HOST=${target#*=} "$python" -W ignore benches/grpc/python_throughput.py --rows "$rows"
done
