"""aggregator.writer.ParquetWriter on a local Storage root: what it writes (rows, LOG_SCHEMA's columns,
SORT_ORDER, row groups, the trace index entries), what ``Written`` says about it (checked against the file
read back with the data key through lake.duck), that the file cannot be read without that key, and how a
storage failure is reported."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest

from aggregator.writer import SORT_ORDER, ParquetWriter
from lake import duck, trace_index
from lake.catalog.model import Tier
from lake.catalog.sqlite import SqliteCatalog
from lake.config import AggregatorConfig, TiersConfig
from lake.keys import DataKey
from lake.storage import Layout, Storage, Target
from query import plan
from runtime.errors import StorageError
from schemas.record import HOUR_NS, LOG_SCHEMA

T0 = 1_795_514_400_000_000_000   # 2026-11-24T10:00:00Z
LAYOUT = Layout(row_group_size=2048, zstd_level=3)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
BODY_MARK = "plaintext-needle-0123456789"


def table(rows: list[dict]) -> pa.Table:
    """LOG_SCHEMA rows; fields not given take a plausible value."""
    n = len(rows)
    base = {"severity_number": 9, "body": BODY_MARK, "node": "node-a", "stream": "stdout", "source_id": "s1",
            "source_path": "/var/log/pods/x/0.log", "flags": 0}
    cols = {}
    for f in LOG_SCHEMA:
        values = [r.get(f.name, base.get(f.name)) for r in rows]
        if f.name == "observed_time":
            values = [r.get("observed_time", r["time"]) for r in rows]
        if f.name == "source_end":
            values = [r.get("source_end", r["source_offset"] + 10) for r in rows]
        cols[f.name] = pa.array(values, f.type) if any(v is not None for v in values) else pa.nulls(n, f.type)
    return pa.table(cols, schema=LOG_SCHEMA)


@pytest.fixture
def lake(tmp_path):
    storage = Storage(AggregatorConfig(data_dir=tmp_path / "lake"), TiersConfig())
    return storage, ParquetWriter(storage, threads=1), DataKey("dk_hot_20261124_test", os.urandom(32))


def read_back(path: str, key: DataKey, columns: str = "*", order: str = "file_row_number") -> list[tuple]:
    """Rows of one stored file, opened with its data key as the lake does (lake.duck), in file order."""
    con = duck.connect(1)
    keys = duck.KeyRegistry(con)
    enc = f"encryption_config={{footer_key: '{keys.add(key)}'}}"
    return con.execute(f"SELECT {columns} FROM read_parquet({duck.sql_str(path)}, {enc}, file_row_number=true) "
                       f"ORDER BY {order}").fetchall()


def five_rows() -> list[dict]:
    return [
        {"time": T0 + 3, "namespace": "shop", "pod": "web-1", "container": "nginx", "source_offset": 30,
         "trace_id": TRACE, "body": "c"},
        {"time": T0 + 1, "namespace": "shop", "pod": "web-1", "container": "nginx", "source_offset": 10, "body": "a"},
        {"time": T0 + 2, "namespace": "pay", "pod": "api-1", "container": "app", "source_offset": 0, "body": "b",
         "severity_text": "error", "severity_number": 17, "attributes": '{"k":1}'},
        {"time": T0 + HOUR_NS, "namespace": None, "pod": "static", "container": "etcd", "source_offset": 5,
         "body": "d"},
        {"time": T0 + 4, "namespace": "shop", "pod": "web-1", "container": "nginx", "source_offset": 40,
         "trace_id": TRACE, "body": "e"},
    ]


def test_rows_come_back_with_the_key_and_written_describes_them(lake):
    storage, writer, key = lake
    target = storage.target("hot", "hot/spool/node-a/0-4.parquet")
    w = writer.write_table(table(five_rows()), target, key, LAYOUT)
    got = read_back(target.final, key, "body, namespace, pod, container, severity_number, attributes")
    assert sorted(got) == [("a", "shop", "web-1", "nginx", 9, None), ("b", "pay", "api-1", "app", 17, '{"k":1}'),
                           ("c", "shop", "web-1", "nginx", 9, None), ("d", None, "static", "etcd", 9, None),
                           ("e", "shop", "web-1", "nginx", 9, None)]
    assert (w.rows, w.min_time, w.max_time) == (5, T0 + 1, T0 + HOUR_NS)
    assert w.namespaces == ("pay", "shop")                           # null left out
    assert w.containers == ("/static/etcd", "pay/api-1/app", "shop/web-1/nginx")
    assert (w.row_groups, w.row_group_rows) == (1, 2048)
    assert w.traces == ((trace_index.trace_key(TRACE), 0, 1),)       # from row group 0, only it


def test_rows_are_stored_in_sort_order(lake):
    storage, writer, key = lake
    rows = []
    rnd = random.Random(7)
    for i in range(300):
        rows.append({"time": T0 + rnd.randrange(2 * HOUR_NS), "namespace": rnd.choice(["a", "b"]),
                     "pod": rnd.choice(["p1", "p2"]), "container": rnd.choice(["c1", "c2"]),
                     "source_id": rnd.choice(["s1", "s2"]), "source_offset": i * 10})
    target = storage.target("hot", "hot/t/0/sorted.parquet")
    writer.write_table(table(rows), target, key, LAYOUT)
    stored = read_back(target.final, key, "epoch_ns(time), namespace, pod, container, source_id, source_offset")
    assert SORT_ORDER.startswith("date_trunc('hour', time), namespace, pod, container, time")
    expected = sorted(((r["time"] // HOUR_NS, r["namespace"], r["pod"], r["container"], r["time"], r["source_id"],
                        r["source_offset"]) for r in rows))
    assert [(t // HOUR_NS, ns, p, c, t, s, o) for t, ns, p, c, s, o in stored] == expected
    # within an hour a container's lines sit together; the later hour comes after all of the first
    hours = [t // HOUR_NS for t, *_ in stored]
    assert hours == sorted(hours) and len(set(hours)) == 2


def test_row_groups_and_the_trace_index_masks(lake):
    storage, writer, key = lake
    other = "00000000000000000000000000000abc"
    rows = [{"time": T0 + i, "source_offset": i, "namespace": "shop", "pod": "web", "container": "app"}
            for i in range(5000)]
    rows[0]["trace_id"] = rows[4999]["trace_id"] = TRACE     # first and last row group
    rows[2048]["trace_id"] = other                           # first row of the second group
    random.Random(3).shuffle(rows)                           # groups are of the sorted file, not of the input
    target = storage.target("hot", "hot/t/0/groups.parquet")
    w = writer.write_table(table(rows), target, key, LAYOUT)
    assert (w.rows, w.row_groups, w.row_group_rows) == (5000, 3, 2048)
    assert w.traces == tuple(sorted([(trace_index.trace_key(TRACE), 0, 0b101), (trace_index.trace_key(other), 1, 0b1)]))
    # the mask's row group g is rows [g*2048, (g+1)*2048) of the file: the rows really are there
    rows_of = read_back(target.final, key, "file_row_number, trace_id", order="file_row_number")
    traced = {n: t for n, t in rows_of if t is not None}
    assert traced == {0: TRACE, 2048: other, 4999: TRACE}
    assert trace_index.groups_of(0, 0b101, w.row_groups) == [0, 2] and trace_index.groups_of(1, 1, 3) == [1]


def test_a_trace_deep_in_a_file_of_many_row_groups_is_read_alone(lake, tmp_path):
    """70 row groups, more than a mask's 63 bits: the trace index names the trace's own row groups from its
    first one (the plan reads 2 of 70), and only a trace spread wider than a window reads the whole file."""
    storage, writer, key = lake
    rows = [{"time": T0 + i, "source_offset": i, "namespace": "shop", "pod": "web", "container": "app"}
            for i in range(70 * 2048)]
    deep, wide = TRACE, "00000000000000000000000000000abc"
    for i in (65 * 2048 + 5, 67 * 2048):
        rows[i]["trace_id"] = deep
    for i in (3, 69 * 2048):
        rows[i]["trace_id"] = wide
    target = storage.target("cold", "cold/t/0/deep.parquet")
    w = writer.write_table(table(rows), target, key, LAYOUT)
    assert w.row_groups == 70
    assert dict((k, (first, mask)) for k, first, mask in w.traces) == {
        trace_index.trace_key(deep): (65, 0b101), trace_index.trace_key(wide): (0, trace_index.ANY)}
    catalog = SqliteCatalog(tmp_path / "catalog.sqlite")
    catalog.replace([], [w.new_file(path="cold/t/0/deep.parquet", tier=Tier.COLD, topic="t", partition="0",
                                    first_offset=0, last_offset=len(rows) - 1, key_id=key.key_id, created_at=1)], 0)
    chosen = plan.trace(catalog, deep)
    assert chosen.row_groups == {"cold/t/0/deep.parquet": [65, 67]}
    assert chosen.row_ranges() == {"cold/t/0/deep.parquet": [(65 * 2048, 66 * 2048 - 1),
                                                               (67 * 2048, 68 * 2048 - 1)]}
    assert "chose 1 of 1 files, 2 of 70 row groups" in chosen.describe()
    assert len(plan.trace(catalog, wide).row_groups["cold/t/0/deep.parquet"]) == 70
    catalog.close()


def test_a_file_read_in_row_ranges_gives_exactly_their_rows(lake):
    """Row ranges of one file (the trace and needle indexes' row groups), one scan each: every row inside
    the ranges, none outside, the ranges' edges included."""
    storage, writer, key = lake
    rows = [{"time": T0 + i, "source_offset": i, "namespace": "shop", "pod": "web", "container": "app"}
            for i in range(10 * 2048)]
    target = storage.target("cold", "cold/t/0/ranges.parquet")
    assert writer.write_table(table(rows), target, key, LAYOUT).row_groups == 10
    ranges = [(2048, 2 * 2048 - 1), (6 * 2048, 8 * 2048 - 1), (9 * 2048 + 5, 9 * 2048 + 5)]
    con = duck.connect(1)
    parts = duck.scan_parts(duck.KeyRegistry(con), {key: [target.final]}, {target.final: ranges})
    assert len(parts) == len(ranges)
    got = [n for (n,) in con.execute(f"SELECT source_offset FROM ({' UNION ALL '.join(parts)}) ORDER BY 1").fetchall()]
    assert got == [n for a, b in ranges for n in range(a, b + 1)]
    con.close()


def test_sha256_and_bytes_are_the_published_files_and_nothing_else_is_left(lake):
    storage, writer, key = lake
    target = storage.target("hot", "hot/t/0/0-4.parquet")
    w = writer.write_table(table(five_rows()), target, key, LAYOUT)
    data = Path(target.final).read_bytes()
    assert (w.bytes, w.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert os.listdir(Path(target.final).parent) == ["0-4.parquet"]       # the staging name is gone
    entry = w.new_file(path="hot/t/0/0-4.parquet", tier="hot", topic="t", partition="0", first_offset=0,
                       last_offset=4, key_id=key.key_id, created_at=1, key_lineage=(key.key_id, "dk_old")).entry
    assert (entry.sha256, entry.bytes, entry.rows, entry.row_groups, entry.key_id) == \
        (w.sha256, w.bytes, 5, 1, key.key_id)
    assert entry.key_lineage == ("dk_old",)                                # the file's own key left out


def test_the_file_cannot_be_read_without_its_key(lake):
    storage, writer, key = lake
    target = storage.target("hot", "hot/t/0/secret.parquet")
    writer.write_table(table(five_rows()), target, key, LAYOUT)
    data = Path(target.final).read_bytes()
    assert data[-4:] == b"PARE" and BODY_MARK.encode() not in data        # encrypted footer, no plain text
    con = duck.connect(1)
    with pytest.raises(duck.Error, match="encrypted"):
        con.execute(f"SELECT * FROM read_parquet({duck.sql_str(target.final)})").fetchall()
    # the same key id with other key bytes does not open it either
    wrong = DataKey(key.key_id, os.urandom(32))
    with pytest.raises(duck.Error):
        read_back(target.final, wrong)
    assert len(read_back(target.final, key)) == 5


def test_every_file_gets_exactly_log_schemas_columns(lake):
    storage, writer, key = lake
    full = table(five_rows())
    old = full.drop_columns(["trace_flags", "resource"]).append_column("extra", pa.array(["x"] * 5))
    target = storage.target("hot", "hot/t/0/old.parquet")
    writer.write_table(old, target, key, LAYOUT)
    con = duck.connect(1)
    keys = duck.KeyRegistry(con)
    assert keys.columns(key, target.final) == duck.ALL_COLUMNS
    described = con.execute(f"DESCRIBE SELECT * FROM read_parquet({duck.sql_str(target.final)}, "
                            f"encryption_config={{footer_key: '{key.key_id}'}})").fetchall()
    assert [(name, kind) for name, kind, *_ in described] == [
        (f.name, duck.sql_type(f.type)) for f in LOG_SCHEMA]
    assert read_back(target.final, key, "count(*) FILTER (WHERE trace_flags IS NULL AND resource IS NULL)",
                     order="1") == [(5,)]


def test_write_rewrites_a_scan_of_stored_files_under_another_key(lake):
    """What compaction does: a query over stored files (ParquetWriter.scan) written to a new file."""
    storage, writer, key = lake
    a, b = storage.target("hot", "hot/t/0/a.parquet"), storage.target("hot", "hot/t/0/b.parquet")
    writer.write_table(table(five_rows()[:3]), a, key, LAYOUT)
    writer.write_table(table(five_rows()[3:]), b, key, LAYOUT)
    warm_key = DataKey("dk_warm_20261124_test", os.urandom(32))
    out = storage.target("warm", "warm/t/0/2026112410.parquet")
    w = writer.write(writer.scan({key: [a.final, b.final]}), out, warm_key, LAYOUT)
    assert w.rows == 5
    assert [r[0] for r in read_back(out.final, warm_key, "body")] == ["b", "a", "c", "e", "d"]   # SORT_ORDER
    with pytest.raises(duck.Error):
        read_back(out.final, key)   # the old key does not open the new file


@contextlib.contextmanager
def unwritable(directory: Path):
    """``directory`` made unwritable: owner-only read and search for a normal user; for root (whom modes do
    not stop), seen through a read-only bind mount as tests/test_damaged_state.py does. Yields the path to
    write through."""
    if os.geteuid() != 0:
        directory.chmod(0o500)
        try:
            yield directory
        finally:
            directory.chmod(0o700)
        return
    view = directory.with_name(directory.name + "-ro")
    view.mkdir()
    if subprocess.run(["mount", "--bind", str(directory), str(view)], capture_output=True).returncode:
        pytest.skip("cannot make a directory unwritable for root here (no bind mount)")
    try:
        assert subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], capture_output=True).returncode == 0
        yield view
    finally:
        subprocess.run(["umount", "-l", str(view)], capture_output=True)


def one_sentence(e: StorageError, final: str) -> None:
    msg = str(e)
    assert msg.startswith(f"cannot write {final}: "), msg
    assert msg.endswith("; free space or fix permissions, the work resumes from the last committed state"), msg
    assert "\n" not in msg and e.__cause__ is None and e.__suppress_context__


def test_an_unwritable_directory_is_a_storage_error_in_one_sentence(tmp_path):
    (tmp_path / "lake" / "hot" / "t" / "0").mkdir(parents=True)
    with unwritable(tmp_path / "lake") as data_dir:
        storage = Storage(AggregatorConfig(data_dir=data_dir), TiersConfig())
        writer = ParquetWriter(storage, threads=1)
        target = storage.target("hot", "hot/t/0/0-4.parquet")
        with pytest.raises(StorageError) as e:
            writer.write_table(table(five_rows()), target, DataKey("dk_x", os.urandom(32)), LAYOUT)
        one_sentence(e.value, target.final)
    assert os.listdir(tmp_path / "lake" / "hot" / "t" / "0") == []


def test_a_directory_removed_under_the_writer_is_a_storage_error(lake, tmp_path):
    _, writer, key = lake
    final = tmp_path / "gone" / "0-4.parquet"
    target = Target(str(final), str(final.with_name(".0-4.parquet.tmp")))
    with pytest.raises(StorageError) as e:
        writer.write_table(table(five_rows()), target, key, LAYOUT)
    one_sentence(e.value, str(final))
    assert not (tmp_path / "gone").exists()


def test_a_failing_cleanup_does_not_hide_the_storage_error(lake, tmp_path):
    _, writer, key = lake
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"a file where a directory should be\n")
    final = blocker / "0-4.parquet"
    target = Target(str(final), str(final.with_name(".0-4.parquet.tmp")))
    with pytest.raises(StorageError) as e:
        writer.write_table(table(five_rows()), target, key, LAYOUT)
    one_sentence(e.value, str(final))


def test_a_publish_failure_discards_the_staging_file(lake, tmp_path):
    _, writer, key = lake
    final = tmp_path / "taken"
    final.mkdir()
    (final / "keep").write_text("x")           # a non-empty directory at the final name: the rename fails
    target = Target(str(final), str(tmp_path / ".taken.tmp"))
    with pytest.raises(StorageError, match=f"^cannot write {final}: "):
        writer.write_table(table(five_rows()), target, key, LAYOUT)
    assert sorted(os.listdir(tmp_path)) == ["taken"] and os.listdir(final) == ["keep"]


def test_a_query_error_is_not_a_storage_error_and_discards_the_staging_file(lake):
    storage, writer, key = lake
    target = storage.target("hot", "hot/t/0/bad.parquet")
    with pytest.raises(duck.Error) as e:
        writer.write("SELECT no_such_column FROM range(3)", target, key, LAYOUT)
    assert not isinstance(e.value, StorageError)
    # one that fails while the file is being written
    rows = "SELECT make_timestamp_ns(range) AS time, CASE WHEN range = 4000 THEN error('boom') END AS body FROM range(5000)"
    with pytest.raises(duck.Error, match="boom") as e:
        writer.write(rows, target, key, LAYOUT)
    assert not isinstance(e.value, StorageError)
    assert os.listdir(Path(target.final).parent) == []
