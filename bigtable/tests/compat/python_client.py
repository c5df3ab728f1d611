"""Google's Python client (google-cloud-bigtable) against our server.

Run by `.ci/compat` with BIGTABLE_EMULATOR_HOST pointing at a fresh server. Exercises
the admin and data APIs the way applications use them and asserts what comes back.
`python_client.py write` and `python_client.py check-restart` split a write from a read
across a server kill (the restart test).
"""

import datetime
import os
import sys

from google.cloud import bigtable
from google.cloud.bigtable import column_family, row_filters
from google.cloud.bigtable.row_set import RowRange, RowSet

UTC = datetime.timezone.utc


def ts(ms):
    return datetime.datetime.fromtimestamp(ms / 1000.0, tz=UTC)


def client_table(name):
    client = bigtable.Client(project="p", admin=True)
    instance = client.instance("i")
    return instance, instance.table(name)


def check(condition, message):
    if not condition:
        raise AssertionError(message)
    print("ok:", message)


def full_session():
    instance, table = client_table("py")
    table.create(
        column_families={
            "cf": column_family.MaxVersionsGCRule(2),
            "ctr": column_family.MaxVersionsGCRule(1),
        }
    )
    check(table.exists(), "table exists after create")
    check("py" in [t.table_id for t in instance.list_tables()], "list_tables names it")
    families = table.list_column_families()
    check(sorted(families) == ["cf", "ctr"], "column families listed")
    check(
        families["cf"].gc_rule == column_family.MaxVersionsGCRule(2),
        "GC rule round-trips",
    )

    row = table.direct_row(b"r1")
    for version in range(3):
        row.set_cell("cf", b"q", b"v%d" % version, timestamp=ts(1000 * (version + 1)))
    row.commit()
    got = table.read_row(b"r1")
    versions = [c.value for c in got.cells["cf"][b"q"]]
    check(versions == [b"v2", b"v1"], "read_row: newest first, GC keeps two versions")

    rows = []
    for i in range(50):
        r = table.direct_row(b"row%03d" % i)
        r.set_cell("cf", b"a", b"a%d" % i)
        r.set_cell("cf", b"b", b"b%d" % i)
        rows.append(r)
    statuses = table.mutate_rows(rows)
    check(all(s.code == 0 for s in statuses), "mutate_rows: every entry succeeds")

    chain = row_filters.RowFilterChain(
        filters=[
            row_filters.ColumnQualifierRegexFilter(b"a"),
            row_filters.CellsColumnLimitFilter(1),
        ]
    )
    read = list(table.read_rows(start_key=b"row010", end_key=b"row020", filter_=chain))
    check([r.row_key for r in read] == [b"row%03d" % i for i in range(10, 20)],
          "read_rows over a range with a filter chain")
    check(all(list(r.cells["cf"].keys()) == [b"a"] for r in read), "the chain kept column a")

    row_set = RowSet()
    row_set.add_row_key(b"row001")
    row_set.add_row_range(RowRange(start_key=b"row040", end_key=b"row042"))
    picked = [r.row_key for r in table.read_rows(row_set=row_set)]
    check(picked == [b"row001", b"row040", b"row041"], "read_rows with keys and ranges")
    check(len(list(table.read_rows(limit=7))) == 7, "read_rows with a limit")

    cond = table.conditional_row(b"r1", filter_=row_filters.ColumnQualifierRegexFilter(b"q"))
    cond.set_cell("cf", b"matched", b"yes", state=True)
    cond.set_cell("cf", b"unmatched", b"no", state=False)
    check(cond.commit() is True, "conditional_row: predicate matched")
    cond = table.conditional_row(b"nobody", filter_=row_filters.PassAllFilter(True))
    cond.set_cell("cf", b"matched", b"yes", state=True)
    cond.set_cell("cf", b"unmatched", b"no", state=False)
    check(cond.commit() is False, "conditional_row: predicate missed on an empty row")
    check(b"unmatched" in table.read_row(b"nobody").cells["cf"], "false mutations applied")

    for _ in range(3):
        app = table.append_row(b"r1")
        app.increment_cell_value("ctr", b"n", 5)
        app.commit()
    app = table.append_row(b"r1")
    app.append_cell_value("cf", b"matched", b"!")
    result = app.commit()
    check(result["cf"][b"matched"][0][0] == b"yes!", "append_cell_value returns the new value")
    counter = table.read_row(b"r1").cells["ctr"][b"n"][0].value
    check(int.from_bytes(counter, "big") == 15, "increment_cell_value counts to 15")

    samples = list(table.sample_row_keys())
    check(len(samples) >= 1 and samples[-1].row_key == b"", "sample_row_keys ends with the empty key")

    table.drop_by_prefix(b"row00")
    left = [r.row_key for r in table.read_rows(start_key=b"row", end_key=b"rox")]
    check(len(left) == 40 and all(not k.startswith(b"row00") for k in left), "drop_by_prefix")
    table.truncate()
    check(list(table.read_rows()) == [], "truncate empties the table")

    table.delete()
    check(not table.exists(), "table gone after delete")


def write_for_restart():
    _, table = client_table("durable")
    table.create(column_families={"cf": column_family.MaxVersionsGCRule(1)})
    rows = []
    for i in range(200):
        r = table.direct_row(b"k%04d" % i)
        r.set_cell("cf", b"q", b"value-%d" % i)
        rows.append(r)
    check(all(s.code == 0 for s in table.mutate_rows(rows)), "200 rows written before the kill")


def check_after_restart():
    _, table = client_table("durable")
    got = {r.row_key: r.cells["cf"][b"q"][0].value for r in table.read_rows()}
    check(len(got) == 200, "all 200 acknowledged rows survive SIGKILL and restart")
    check(all(got[b"k%04d" % i] == b"value-%d" % i for i in range(200)), "with their values")




def load_for_splits():
    """Loads rows while reading them back, into a server started with a tiny split size."""
    _, table = client_table("split")
    table.create(column_families={"cf": column_family.MaxVersionsGCRule(1)})
    for batch in range(20):
        rows = []
        for i in range(200):
            r = table.direct_row(b"row%06d" % (i * 20 + batch))
            r.set_cell("cf", b"q", os.urandom(300))
            rows.append(r)
        if not all(s.code == 0 for s in table.mutate_rows(rows)):
            raise AssertionError("batch %d failed" % batch)
        # Reads while the table splits: ordered, no row twice.
        keys = [r.row_key for r in table.read_rows(start_key=b"row", end_key=b"rox")]
        if keys != sorted(set(keys)):
            raise AssertionError("a scan during splits returned rows out of order or twice")
    check_split_table(table)


def check_split_table(table=None):
    if table is None:
        _, table = client_table("split")
    keys = [r.row_key for r in table.read_rows()]
    check(keys == [b"row%06d" % i for i in range(4000)], "all 4000 rows readable across tablets")
    boundaries = [s.row_key for s in table.sample_row_keys()][:-1]
    check(len(boundaries) >= 4, "sample_row_keys shows the splits (%d boundaries)" % len(boundaries))
    return boundaries


def record_tablets(path):
    with open(path, "w") as f:
        f.write("\n".join(k.hex() for k in check_split_table()))


def compare_tablets(path):
    with open(path) as f:
        before = [bytes.fromhex(line) for line in f.read().split("\n") if line]
    after = check_split_table()
    check(set(before) <= set(after), "the tablet boundaries survive a restart")


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "full"
    if mode == "record-tablets":
        record_tablets(sys.argv[2])
    elif mode == "compare-tablets":
        compare_tablets(sys.argv[2])
    else:
        {
            "full": full_session,
            "write": write_for_restart,
            "check-restart": check_after_restart,
            "load-splits": load_for_splits,
        }[mode]()
