"""The trace key is computed by DuckDB when indexing and by Python when looking up: they must agree."""

from __future__ import annotations

from lake import duck, trace_index


def test_python_and_duckdb_compute_the_same_key():
    ids = ["4bf92f3577b34da6a3ce929d0e0e4736", "1234567890123456789", "trace-é-☃", "", "0" * 32]
    con = duck.connect()
    con.execute("CREATE TABLE t (trace_id VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?)", [[i] for i in ids])
    got = dict(con.execute(f"SELECT trace_id, {trace_index.key_sql('trace_id')} FROM t").fetchall())
    assert got == {i: trace_index.trace_key(i) for i in ids}
    assert len(set(got.values())) == len(ids) and all(0 <= k < 2**60 for k in got.values())


def test_masks():
    con = duck.connect()
    rows = "SELECT range AS n FROM range(10000)"
    mask = con.execute(f"SELECT {trace_index.mask_sql('n', 2048, 5)} FROM ({rows}) WHERE n IN (5, 4100, 9999)"
                       ).fetchone()[0]
    assert trace_index.groups_of(mask, 5) == [0, 2, 4]
    assert con.execute(f"SELECT {trace_index.mask_sql('n', 2048, 64)} FROM ({rows})").fetchone()[0] == trace_index.ANY
    assert trace_index.groups_of(trace_index.ANY, 3) == [0, 1, 2]
