"""Compaction: hot → warm per partition and hour, warm → cold per day on its own root; the trace index
follows the data; readers see every record exactly once while files move."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import duckdb
import orjson
import pytest

import query
from aggregator import config as agg_config
from aggregator.cli.run import main as aggregator
from aggregator.compaction import DAY_NS, HOUR_NS, Compactor, spans
from lake.catalog.model import Tier
from lake import keys
from lake.catalog.sqlite import SqliteCatalog
from query import plan
from query.cli import main as query_cli
from query.connect import Lake
from shipper.cli import main as shipper
from tests.conftest import LAKE_START, cri, fill_lake, free_port, lake_trace, pod_log, write_config

COUNT_SQL = "SELECT count(*), count(DISTINCT record_id) FROM logs"
COLD_AFTER_S = 30 * 86400
AFTER_LAKE = (LAKE_START + 2 * COLD_AFTER_S) * 1_000_000_000  # a clock when every day of the lake is cold


def compactor(config: Path) -> Compactor:
    settings = agg_config.load(str(config))
    return Compactor.open(settings, keys.master_for(settings.aggregator))


def catalog(tmp: Path) -> SqliteCatalog:
    return SqliteCatalog(tmp / "lake" / "catalog.sqlite")


def counts(config: Path) -> tuple[int, int]:
    return query.connect(str(config)).execute(COUNT_SQL).fetchone()


def files_on_disk(root: Path, tier: str) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / tier).rglob("*") if p.is_file()}


@pytest.fixture
def lake(tmp_path):
    config = write_config(tmp_path, tiers={"warm_after_s": 0, "delete_grace_s": 0, "cold_after_s": COLD_AFTER_S,
                                           "cold_dir": str(tmp_path / "cold-root")})
    return tmp_path, config, fill_lake(tmp_path, config)


def test_hot_files_become_one_sorted_warm_file_per_partition_and_hour(lake):
    tmp, config, n = lake
    assert len(catalog(tmp).files("hot")) == 6  # 3 rounds x 2 partitions
    assert aggregator(["--config", str(config), "compact"]) == 0
    cat = catalog(tmp)
    warm = cat.files("warm")
    assert cat.files("hot") == [] and files_on_disk(tmp / "lake", "hot") == set()
    # 90 minutes of lines from 23:00 span hours 23 and 00 in each of the two partitions
    assert sorted((f.partition, f.min_time // HOUR_NS) for f in warm) == sorted(
        (p, LAKE_START // 3600 + h) for p in ("node-a", "node-b") for h in (0, 1))
    for f in warm:
        assert f.min_time // HOUR_NS == f.max_time // HOUR_NS
        assert hashlib.sha256((tmp / "lake" / f.path).read_bytes()).hexdigest() == f.sha256
        assert f.key_id.startswith("dk_warm_")
    assert counts(config) == (n, n)
    # within a file, rows are ordered by namespace, pod, container, time
    con = query.connect(str(config))
    for f in warm:
        rows = con.execute("SELECT namespace, pod, container, time FROM read_parquet(?, "
                           f"encryption_config={{footer_key: '{f.key_id}'}})", [str(tmp / "lake" / f.path)]).fetchall()
        assert rows == sorted(rows) and len(rows) == f.rows


def test_late_data_merges_into_the_small_warm_file_of_its_hour(lake):
    tmp, config, n = lake
    assert aggregator(["--config", str(config), "compact"]) == 0
    before = {(f.partition, f.min_time // HOUR_NS) for f in catalog(tmp).files("warm")}
    n += fill_lake(tmp, config, rounds=1, lines=10)  # same hours again
    assert aggregator(["--config", str(config), "compact"]) == 0
    warm = catalog(tmp).files("warm")
    assert len(warm) == len(before) and {(f.partition, f.min_time // HOUR_NS) for f in warm} == before
    assert files_on_disk(tmp / "lake", "warm") == {f.path for f in warm}
    assert counts(config) == (n, n)


def test_warm_days_become_cold_files_on_their_own_root(lake):
    tmp, config, n = lake
    c = compactor(config)
    c.run()
    report = c.run(now_ns=AFTER_LAKE)
    assert report.by_tier == {"cold": 4}  # 2 partitions x 2 days
    cold = catalog(tmp).files("cold")
    assert catalog(tmp).files("warm") == [] and files_on_disk(tmp / "lake", "warm") == set()
    assert sorted((f.partition, f.min_time // DAY_NS) for f in cold) == sorted(
        (p, LAKE_START // 86400 + d) for p in ("node-a", "node-b") for d in (0, 1))
    assert files_on_disk(tmp / "cold-root", "cold") == {f.path for f in cold}
    assert not (tmp / "lake" / "cold").exists()
    assert all(f.key_id.startswith("dk_cold_") for f in cold)
    assert counts(config) == (n, n)
    assert c.storage.layout(Tier.COLD).zstd_level == 9 > c.storage.layout(Tier.WARM).zstd_level


def test_a_reader_sees_every_record_once_while_files_move(tmp_path):
    config = write_config(tmp_path, tiers={"warm_after_s": 0, "delete_grace_s": 3, "cold_after_s": COLD_AFTER_S})
    n = fill_lake(tmp_path, config)
    planned = query.connect(str(config))  # planned before any move: its files stay for the grace period
    seen: list[tuple[int, int]] = []
    done = threading.Event()

    def read_continuously() -> None:
        while not done.is_set():
            seen.append(counts(config))

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        c = compactor(config)
        c.run()
        c.run(now_ns=AFTER_LAKE)
        time.sleep(0.3)
    finally:
        done.set()
        reader.join()
    assert len(seen) >= 3 and set(seen) == {(n, n)}
    assert planned.execute(COUNT_SQL).fetchone() == (n, n)
    # the replaced files are deleted once the grace period is over
    cat = catalog(tmp_path)
    assert len(cat.pending_deletes()) == 6 + 4
    time.sleep(3)
    c.run(now_ns=AFTER_LAKE)
    assert cat.pending_deletes() == [] and files_on_disk(tmp_path / "lake", "hot") == set()
    assert counts(config) == (n, n)


def test_trace_index_follows_the_data_and_is_exact(lake):
    tmp, config, _ = lake
    con = query.connect(str(config))

    def holders() -> dict[str, set[str]]:
        """trace id -> files that really hold it, by reading every file."""
        out: dict[str, set[str]] = {}
        for f in catalog(tmp).files():
            root = tmp / "cold-root" if f.tier == "cold" else tmp / "lake"
            for (t,) in con.execute(f"SELECT DISTINCT trace_id FROM read_parquet(?, encryption_config="
                                    f"{{footer_key: '{f.key_id}'}}) WHERE trace_id IS NOT NULL",
                                    [str(root / f.path)]).fetchall():
                out.setdefault(t, set()).add(f.path)
        return out

    def indexed(trace: str) -> set[str]:
        return {f.path for f in plan.trace(catalog(tmp), trace).files}

    for stage in ("hot", "warm", "cold"):
        if stage == "warm":
            compactor(config).run()
        elif stage == "cold":
            compactor(config).run(now_ns=AFTER_LAKE)
        con = query.connect(str(config))
        truth = holders()
        assert len(truth) == 40
        assert all(indexed(t) == paths for t, paths in truth.items()), stage
        assert {p.split("/")[0] for paths in truth.values() for p in paths} == {stage}
    assert indexed("f" * 32) == set()


def test_index_row_groups_hold_the_trace(tmp_path):
    """Small row groups: the index names exactly the row groups holding a trace, and reading only
    those finds every line of it."""
    config = write_config(tmp_path, aggregator={"parquet_row_group_size": 2048})
    rare, common = "a" * 32, "b" * 32
    lines = [cri(f"2026-11-20T23:{i // 600:02d}:{i // 10 % 60:02d}.{i:09d}Z",
                 orjson.dumps({"msg": f"m{i}", "trace_id": rare if i in (4500, 4501) else common if i % 3 == 0
                               else None}).decode()) for i in range(6000)]
    pod_log(tmp_path, "shop", "web-1", "nginx").write_text("".join(lines))
    assert shipper(["--config", str(config), "--once"]) == 0
    assert aggregator(["--config", str(config), "--once"]) == 0
    con = query.connect(str(config))
    (f,) = catalog(tmp_path).files()
    assert (f.rows, f.row_groups, f.row_group_rows) == (6000, 3, 2048)
    for trace, groups in ((rare, [2]), (common, [0, 1, 2])):
        p = plan.trace(catalog(tmp_path), trace)
        assert p.row_groups == {f.path: groups}
        truth = con.execute(f"SELECT DISTINCT file_row_number // 2048 FROM read_parquet(?, encryption_config="
                            f"{{footer_key: '{f.key_id}'}}, file_row_number=true) WHERE trace_id = ?",
                            [str(tmp_path / "lake" / f.path), trace]).fetchall()
        assert sorted(g for (g,) in truth) == groups
        lake = Lake(str(config))
        try:
            found = lake.query(p.files, "SELECT count(*) AS n FROM logs WHERE trace_id = ?", [trace],
                               rows=p.row_ranges(), what={"command": "test"}).column("n")[0].as_py()
        finally:
            lake.close()
        assert found == con.execute("SELECT count(*) FROM logs WHERE trace_id = ?", [trace]).fetchone()[0] > 0
    assert plan.trace(catalog(tmp_path), rare).row_ranges() == {f.path: [(4096, 6143)]}
    # DuckDB cuts row groups at exactly the configured size (what the index assumes), seen unencrypted
    plain = duckdb.connect()
    plain.execute(f"COPY (SELECT * FROM range(5000)) TO '{tmp_path}/plain.parquet' (ROW_GROUP_SIZE 2048)")
    assert [r for (r,) in plain.execute("SELECT row_group_num_rows FROM parquet_metadata(?) ORDER BY row_group_id",
                                      [f"{tmp_path}/plain.parquet"]).fetchall()] == [2048, 2048, 904]


def test_trace_lookup_opens_only_the_files_holding_the_trace(lake, capsys):
    tmp, config, _ = lake
    compactor(config).run()
    trace = lake_trace(5)
    expected = query.connect(str(config)).execute("SELECT count(*) FROM logs WHERE trace_id = ?", [trace]).fetchone()[0]
    chosen = {f.path for f in plan.trace(catalog(tmp), trace).files}
    others = [f for f in catalog(tmp).files() if f.path not in chosen]
    assert chosen and others
    for f in others:  # make every other file unreadable
        (tmp / "lake" / f.path).write_bytes(b"not parquet")
    assert query_cli(["--config", str(config), "-f", "csv", "trace", trace, "--explain"]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()[1:]
    assert len(lines) == expected == 8 and all(f"r1 i{i}" in ln for ln in lines for i in (4, 44) if f"i{i}" in ln)
    assert [ln.split(",")[0] for ln in lines] == sorted(ln.split(",")[0] for ln in lines)
    assert f"{len(chosen)} of {len(chosen) + len(others)} files" in err
    assert query_cli(["--config", str(config), "sql", "SELECT count(*) FROM logs"]) == 1


def test_bad_row_group_size_is_refused(tmp_path, capsys):
    config = write_config(tmp_path, tiers={"warm_row_group_size": 100_000})
    assert aggregator(["--config", str(config), "compact"]) == 1
    assert "[tiers] warm_row_group_size = 100000 must be a positive multiple of 2048" in capsys.readouterr().err


def test_spans_split_a_day_into_runs_of_whole_hours_up_to_the_limit():
    day, h = 20_000 * DAY_NS, HOUR_NS
    hours = [(day, 5), (day + h, 5), (day + 3 * h, 20), (day + 4 * h, 1), (day + DAY_NS + 2 * h, 3)]
    assert spans(hours, DAY_NS, 0) == [(day, day + DAY_NS), (day + DAY_NS, day + 2 * DAY_NS)]
    assert spans(hours, DAY_NS, 10) == [(day, day + 2 * h), (day + 3 * h, day + 4 * h), (day + 4 * h, day + 5 * h),
                                        (day + DAY_NS, day + 2 * DAY_NS)]   # an hour above the limit stays whole
    assert spans(hours, DAY_NS, 100) == [(day, day + DAY_NS), (day + DAY_NS, day + 2 * DAY_NS)]
    assert spans(hours, HOUR_NS, 0) == [(t, t + h) for t, _ in hours]
    assert spans([], DAY_NS, 10) == []
    with pytest.raises(ValueError, match="in order"):
        spans([(day + h, 1), (day, 1)], DAY_NS, 10)
    with pytest.raises(ValueError, match="in order"):
        spans([(day, 1), (day, 1)], DAY_NS, 10)


@pytest.mark.parametrize("step_s, limit, runs", [
    (60, 1, [(0, 1), (1, 2)]),        # 23:00 to 02:00, 120 rows an hour a partition: one file an hour
    (90, 160, [(0, 2), (2, 4)]),      # 23:00 to 03:30, 80 rows an hour: runs of two hours
])
def test_a_day_above_the_file_limit_becomes_cold_files_of_whole_hours(tmp_path, step_s, limit, runs):
    config = write_config(tmp_path, tiers={"warm_after_s": 0, "delete_grace_s": 0, "cold_after_s": COLD_AFTER_S,
                                           "cold_file_max_rows": limit})
    n = fill_lake(tmp_path, config, step_s=step_s)   # the first day holds one hour (23:00), whole in one file
    con = query.connect(str(config))
    truth = dict(con.execute("SELECT trace_id, count(*) FROM logs WHERE trace_id IS NOT NULL GROUP BY 1").fetchall())
    c = compactor(config)
    c.run()
    assert c.run(now_ns=AFTER_LAKE).by_tier == {"cold": 2 * (1 + len(runs))}
    cold = catalog(tmp_path).files("cold")
    assert catalog(tmp_path).files() == cold and sum(f.rows for f in cold) == n
    day1 = (LAKE_START // 86400 + 1) * DAY_NS
    held = sorted((f.partition, f.min_time // HOUR_NS, f.max_time // HOUR_NS) for f in cold if f.max_time >= day1)
    first = day1 // HOUR_NS
    assert held == [(p, first + a, first + b - 1) for p in ("node-a", "node-b") for a, b in runs]
    assert all(f.rows <= limit or f.min_time // HOUR_NS == f.max_time // HOUR_NS for f in cold)   # or an hour alone
    names = sorted(f.path.rsplit("/", 1)[1].split("-")[0] for f in cold)
    assert names == sorted([time.strftime("%Y%m%d", time.gmtime(LAKE_START))] * 2
                           + [time.strftime("%Y%m%d%H", time.gmtime(day1 // 10**9 + a * 3600)) for a, _ in runs] * 2)
    assert counts(config) == (n, n)
    lake = Lake(str(config))
    for trace, want in truth.items():
        chosen = plan.trace(lake.catalog, trace)
        got = lake.query(chosen.files, "SELECT count(*) AS n FROM logs WHERE trace_id = ?", [trace],
                         rows=chosen.row_ranges(), what={"command": "test"}).column("n")[0].as_py()
        assert got == want, trace
    lake.close()


@pytest.mark.parametrize("wrong", ["a span left out", "a span twice"])
def test_a_wrong_cut_of_a_day_is_caught_and_leaves_the_inputs(tmp_path, monkeypatch, wrong):
    """The check that a job wrote exactly its inputs' rows fails when the cut loses or repeats an hour:
    nothing is swapped in the catalog, the outputs are removed, and every record is still read once."""
    import aggregator.compaction as compaction
    from runtime.errors import StorageError
    config = write_config(tmp_path, tiers={"warm_after_s": 0, "delete_grace_s": 0, "cold_after_s": COLD_AFTER_S,
                                           "cold_file_max_rows": 1})
    n = fill_lake(tmp_path, config, step_s=60)
    c = compactor(config)
    c.run()
    warm = catalog(tmp_path).files()
    cut = compaction.spans
    monkeypatch.setattr(compaction, "spans", lambda *a: (lambda s: s[:-1] if wrong == "a span left out"
                                                         else s + s[-1:])(cut(*a)))
    with pytest.raises(StorageError, match=r"read \d+ rows but wrote \d+; inputs left in place"):
        c.run(now_ns=AFTER_LAKE)
    assert catalog(tmp_path).files() == warm
    assert files_on_disk(tmp_path / "lake", "cold") == set()
    assert counts(config) == (n, n)


def test_counts_by_tier_never_change(lake):
    tmp, config, n = lake
    c = compactor(config)
    for now in (None, AFTER_LAKE):
        c.run(now_ns=now)
        tiers = Counter()
        for f in catalog(tmp).files():
            tiers[f.tier] += f.rows
        assert sum(tiers.values()) == n


@pytest.fixture
def s3(tmp_path):
    """moto's S3 server on loopback with a bucket ``lake``; yields its host:port."""
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/lake", method="PUT"), timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


def test_cold_tier_on_s3_through_httpfs(tmp_path, s3, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    config = write_config(tmp_path, tiers={"warm_after_s": 0, "delete_grace_s": 0, "cold_after_s": COLD_AFTER_S,
                                           "cold_dir": "s3://lake/archive", "s3_endpoint": s3,
                                           "s3_url_style": "path", "s3_use_ssl": False})
    n = fill_lake(tmp_path, config, rounds=2, lines=40)
    c = compactor(config)
    assert c.run(now_ns=AFTER_LAKE).by_tier == {"warm": 2, "cold": 2}
    cold = catalog(tmp_path).files("cold")
    assert catalog(tmp_path).files() == cold and len(cold) == 2
    body = urllib.request.urlopen(f"http://{s3}/lake?prefix=archive/cold/", timeout=5).read().decode()
    assert all(f"<Key>archive/{f.path}</Key>" in body for f in cold)
    assert not (tmp_path / "lake" / "cold").exists()
    assert counts(config) == (n, n)
    trace = lake_trace(3)
    assert {f.path for f in plan.trace(catalog(tmp_path), trace).files} <= {f.path for f in cold}
    assert aggregator(["--config", str(config), "verify"]) == 0
