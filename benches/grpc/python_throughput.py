"""Throughput of MutateRow and ReadRows through Google's Python client, against whatever
server BIGTABLE_EMULATOR_HOST names (ours, or Google's emulator), same script for both.

    BIGTABLE_EMULATOR_HOST=127.0.0.1:8086 python python_throughput.py --rows 20000

Prints one line per workload: operations, seconds, operations per second.
"""

import argparse
import time

from google.cloud import bigtable
from google.cloud.bigtable import column_family


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--table", default="bench")
    args = parser.parse_args()

    client = bigtable.Client(project="p", admin=True)
    table = client.instance("i").table(args.table)
    if table.exists():
        table.delete()
    table.create(column_families={"cf": column_family.MaxVersionsGCRule(1)})
    value = b"v" * args.value_size
    keys = [b"user%010d" % ((i * 7919) % args.rows) for i in range(args.rows)]

    def report(name, ops, seconds):
        print(f"{name:<22} {ops:>8} ops {seconds:8.2f} s {ops / seconds:10.0f} ops/s")

    start = time.perf_counter()
    for key in keys:
        row = table.direct_row(key)
        row.set_cell("cf", b"q", value)
        row.commit()
    report("MutateRow (1 row)", len(keys), time.perf_counter() - start)

    start = time.perf_counter()
    batch = 100
    for at in range(0, len(keys), batch):
        rows = []
        for key in keys[at:at + batch]:
            row = table.direct_row(key)
            row.set_cell("cf", b"q2", value)
            rows.append(row)
        statuses = table.mutate_rows(rows)
        assert all(s.code == 0 for s in statuses)
    report("MutateRows (100 rows)", len(keys), time.perf_counter() - start)

    start = time.perf_counter()
    n = sum(1 for _ in table.read_rows())
    assert n == args.rows, n
    report("ReadRows (full scan)", n, time.perf_counter() - start)

    start = time.perf_counter()
    point = keys[: max(1, len(keys) // 4)]
    for key in point:
        assert table.read_row(key) is not None
    report("ReadRows (1 row)", len(point), time.perf_counter() - start)
    table.delete()


if __name__ == "__main__":
    main()
