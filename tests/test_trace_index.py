"""The trace key is computed by DuckDB when indexing and by Python when looking up: they must agree."""

from __future__ import annotations

import pytest

from lake import duck, trace_index
from lake.catalog.model import FileEntry, NewFile, Tier
from lake.catalog.sqlite import SqliteCatalog


def test_python_and_duckdb_compute_the_same_key():
    ids = ["4bf92f3577b34da6a3ce929d0e0e4736", "1234567890123456789", "trace-é-☃", "", "0" * 32]
    con = duck.connect()
    con.execute("CREATE TABLE t (trace_id VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?)", [[i] for i in ids])
    got = dict(con.execute(f"SELECT trace_id, {trace_index.key_sql('trace_id')} FROM t").fetchall())
    assert got == {i: trace_index.trace_key(i) for i in ids}
    assert len(set(got.values())) == len(ids) and all(0 <= k < 2**60 for k in got.values())


def entries(rows: dict[int, str], groups: int, rows_per_group: int = 2048) -> dict[str, tuple[int, int]]:
    """trace id -> (first row group, mask) as the writer computes them, for traces at the given row numbers."""
    con = duck.connect()
    con.execute("CREATE TABLE t AS SELECT range AS n, NULL::VARCHAR AS trace_id FROM range(?)",
                [groups * rows_per_group])
    con.executemany("UPDATE t SET trace_id = ? WHERE n = ?", [[tid, n] for n, tid in rows.items()])
    found = con.execute(trace_index.entries_sql("t", "n", rows_per_group)).fetchall()
    by_key = {k: (first, mask) for k, first, mask in found}
    return {tid: by_key[trace_index.trace_key(tid)] for tid in set(rows.values())}


def test_masks_start_at_a_traces_first_row_group():
    got = entries({5: "a", 4100: "a", 9999: "a", 205_000: "b", 209_000: "b", 150_000: "c", 300_000: "c"}, 200)
    assert got["a"] == (0, 0b10101) and trace_index.groups_of(*got["a"], 200) == [0, 2, 4]
    # far past the 63 bits a mask has: the window starts at the trace's first row group
    assert got["b"] == (100, 0b101) and trace_index.groups_of(*got["b"], 200) == [100, 102]
    # a trace spread over more than a window is read whole
    assert got["c"] == (73, trace_index.ANY) and trace_index.groups_of(*got["c"], 3) == [0, 1, 2]


def test_a_mask_stays_a_positive_integer_at_the_windows_last_bit():
    first, mask = entries({0: "a", 62 * 2048: "a"}, 64)["a"]
    assert (first, mask) == (0, 1 | 1 << 62) and 0 < mask < 2**63
    assert trace_index.groups_of(first, mask, 64) == [0, 62]
    assert entries({0: "a", 63 * 2048: "a"}, 64)["a"] == (0, trace_index.ANY)


def test_a_catalog_from_before_windows_keeps_its_masks_meaning(tmp_path):
    """A catalog written before first_group existed: its masks count from row group 0, and opening it
    with this loglake adds the column as 0, so every lookup names the same row groups as before."""
    entry = FileEntry(path="cold/t/0/a.parquet", tier=Tier.COLD, topic="t", partition="0", first_offset=0,
                      last_offset=9, min_time=1, max_time=2, rows=10, bytes=100, row_groups=5, row_group_rows=2,
                      sha256="00", key_id="k", namespaces=("shop",), containers=("shop/web/app",), created_at=1)
    path = tmp_path / "catalog.sqlite"
    cat = SqliteCatalog(path)
    cat.replace([], [NewFile(entry, [(7, 2, 0b101)])], 0)
    assert [(f.path, first, mask) for f, first, mask in cat.trace_files(7)] == [(entry.path, 2, 0b101)]
    cat._db.execute("DELETE FROM trace_index")
    cat._db.execute("ALTER TABLE trace_index DROP COLUMN first_group")
    cat._db.execute("INSERT INTO trace_index VALUES (7, (SELECT id FROM files), ?)", (0b10100,))
    cat._db.commit()
    cat.close()
    cat = SqliteCatalog(path)
    [(f, first, mask)] = cat.trace_files(7)
    assert trace_index.groups_of(first, mask, f.row_groups) == [2, 4]
    cat.close()


def test_a_loglake_that_reads_masks_from_row_group_0_refuses_this_catalog(tmp_path, monkeypatch):
    """Masks count from first_group since schema version 5: a reader of version 4 would take them from row
    group 0 and miss a trace's lines, so it must refuse the catalog instead (the version guard)."""
    import lake.catalog.sqlite as sqlite_module
    from runtime.errors import ConfigError
    SqliteCatalog(tmp_path / "catalog.sqlite").close()
    monkeypatch.setattr(sqlite_module, "SCHEMA_VERSION", 4)
    with pytest.raises(ConfigError, match="schema version 5, this loglake knows up to 4"):
        SqliteCatalog(tmp_path / "catalog.sqlite")
