"""Records resent by the shipper are dropped by their id; new ones never are."""

from __future__ import annotations

import shutil

import pyarrow as pa

from aggregator.cli.run import main as aggregator
from aggregator.dedup import Dedup
from lake.catalog.sqlite import SqliteCatalog as Catalog
from schemas.record import LOG_SCHEMA
from shipper.cli import main as shipper
from tests.conftest import cri, pod_log, stored_rows, write_config, write_sample_logs


def rows(*spec: tuple[str, str | None, int]) -> pa.Table:
    n = len(spec)
    cols = {f.name: pa.nulls(n, f.type) for f in LOG_SCHEMA}
    cols["source_id"] = pa.array([s for s, _, _ in spec])
    cols["stream"] = pa.array([t for _, t, _ in spec])
    cols["source_offset"] = pa.array([o for _, _, o in spec], pa.int64())
    return pa.table(cols)


def offsets(t: pa.Table) -> list[tuple]:
    return list(zip(t.column("source_id").to_pylist(), t.column("stream").to_pylist(),
                    t.column("source_offset").to_pylist()))


def test_marks_per_source_and_stream():
    d = Dedup({})
    assert offsets(d.filter("0", rows(("a", "stdout", 0), ("a", "stdout", 10), ("a", "stderr", 5)))) == \
        [("a", "stdout", 0), ("a", "stdout", 10), ("a", "stderr", 5)]
    # a resend overlapping what is stored, plus new rows; stderr at 7 is new although < stdout's mark
    got = d.filter("0", rows(("a", "stdout", 10), ("a", "stdout", 20), ("a", "stderr", 7), ("b", None, 0)))
    assert offsets(got) == [("a", "stdout", 20), ("a", "stderr", 7), ("b", None, 0)]
    assert d.dropped == 1
    # another partition has marks of its own
    assert d.filter("1", rows(("a", "stdout", 10))).num_rows == 1


def test_resend_after_lost_checkpoint_stores_nothing_twice(tmp_path):
    expected = write_sample_logs(tmp_path)
    config = write_config(tmp_path)
    assert shipper(["--config", str(config), "--once"]) == 0
    assert aggregator(["--config", str(config), "--once"]) == 0
    shutil.rmtree(tmp_path / "shipper")             # the shipper forgets everything: resends it all
    frontend = pod_log(tmp_path, "shop", "frontend-7c9b4-fghij", "nginx")
    new_offset = frontend.stat().st_size
    with frontend.open("a") as f:
        f.write(cri("2026-11-24T10:00:05Z", "ERROR new after the resend"))
    assert shipper(["--config", str(config), "--once"]) == 0
    assert aggregator(["--config", str(config), "--once"]) == 0
    assert stored_rows(config) == expected + [
        ("nginx", new_offset, "stdout", "ERROR", 17, None, "ERROR new after the resend")]
    marks = Catalog(tmp_path / "lake" / "catalog.sqlite").source_marks("spool")
    assert sum(len(m) for m in marks.values()) == 3   # checkout stdout + stderr, frontend stdout
