"""loglake-query commands over a lake with hot and warm files: filters, pruning, tail, stats, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

import query
from aggregator.cli.run import main as aggregator
from query.cli import main as q
from runtime.errors import StorageError
from tests.conftest import fill_lake, lake_trace, write_config

HOUR = "2026-11-20T23:00:00Z"
NEXT_HOUR = "2026-11-21T00:00:00Z"


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """Warm files for the first rounds, hot files for the last: queries must span tiers."""
    tmp = tmp_path_factory.mktemp("lake")
    config = write_config(tmp, tiers={"warm_after_s": 0, "delete_grace_s": 0, "cold_after_s": 10**9})
    n = fill_lake(tmp, config, rounds=3, lines=60)
    assert aggregator(["--config", str(config), "compact"]) == 0
    n += fill_lake(tmp, config, rounds=1, lines=20)  # stays hot
    return tmp, config, n


def run(capsys, config, *argv) -> tuple[int, str, str]:
    rc = q(["--config", str(config), *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def rows(capsys, config, *argv) -> list[dict]:
    rc, out, err = run(capsys, config, "--format", "json", *argv)
    assert rc == 0, err
    return [json.loads(line) for line in out.splitlines()]


def sql(config, text: str) -> list[tuple]:
    return query.connect(str(config)).execute(text).fetchall()


def test_logs_filters_by_glob_level_time_and_text(lake, capsys):
    _, config, n = lake
    assert len(rows(capsys, config, "logs", "--since", "all", "--limit", "0")) == n
    got = rows(capsys, config, "logs", "--since", HOUR, "--until", NEXT_HOUR, "-n", "sh*", "--pod", "web-node-?",
               "--level", "error", "--limit", "0")
    expect = sql(config, "SELECT count(*) FROM logs WHERE namespace = 'shop' AND severity_number BETWEEN 17 AND 20 "
                         f"AND time >= '{HOUR[:-1]}' AND time < '{NEXT_HOUR[:-1]}'")[0][0]
    assert len(got) == expect > 0
    assert {(r["namespace"], r["level"]) for r in got} == {("shop", "error")}
    assert all(r["time"].startswith("2026-11-20T23:") for r in got)
    assert [r["time"] for r in got] == sorted(r["time"] for r in got)
    # warn+ takes warn, error and fatal; here only error lines exist above info
    assert len(rows(capsys, config, "logs", "--since", "all", "--level", "warn+", "--limit", "0")) == \
        sql(config, "SELECT count(*) FROM logs WHERE severity_number >= 13")[0][0]
    needle = rows(capsys, config, "logs", "--since", "all", "--grep", "node-b app r2 i1", "--limit", "0")
    assert sorted(r["body"] for r in needle) == sorted(f"node-b app r2 i{i}" for i in [1, *range(10, 20)])
    regex = rows(capsys, config, "logs", "--since", "all", "--grep", r"node-b app r2 i1$", "--regex")
    assert [r["body"] for r in regex] == ["node-b app r2 i1"]


def test_limit_keeps_the_newest_and_reverse_flips(lake, capsys):
    _, config, _ = lake
    newest = sql(config, "SELECT body FROM logs ORDER BY time DESC, record_id DESC LIMIT 5")
    got = rows(capsys, config, "logs", "--since", "all", "--limit", "5")
    assert [r["body"] for r in got] == [b for (b,) in reversed(newest)]
    rev = rows(capsys, config, "logs", "--since", "all", "--limit", "5", "--reverse")
    assert [r["body"] for r in rev] == [b for (b,) in newest]


def test_times_in_another_zone_and_parquet_output(lake, capsys, tmp_path):
    _, config, n = lake
    got = rows(capsys, config, "logs", "--since", HOUR, "--until", "2026-11-20T23:00:01Z", "--tz", "Asia/Tokyo")
    assert got and all(r["time"].startswith("2026-11-21T08:00:00.") and r["time"].endswith("+0900") for r in got)
    rc, _, err = run(capsys, config, "logs", "--since", "all", "--limit", "0", "--output-file", str(tmp_path / "x.parquet"))
    assert rc == 0 and f"wrote {n} rows" in err
    assert pq.read_table(tmp_path / "x.parquet").num_rows == n
    assert "record_id" in pq.read_schema(tmp_path / "x.parquet").names


def test_container_and_time_query_opens_only_matching_files(lake, capsys):
    tmp, config, _ = lake
    rc, _, err = run(capsys, config, "logs", "--since", HOUR, "--until", "2026-11-20T23:15:00Z", "--pod", "web-node-a",
                     "--explain")
    assert rc == 0
    # 2 partitions x 2 hours of warm files + 2 hot files; node-a's warm file of hour 23 and its hot file can match
    assert "catalog chose 2 of 6 files" in err
    assert "warm/spool/node-a/2026112023-" in err and "hot/spool/node-a/" in err and "node-b" not in err


def test_trace_spans_tiers_in_time_order(lake, capsys):
    _, config, _ = lake
    trace = lake_trace(0)  # in every round, so in warm and hot files
    got = rows(capsys, config, "trace", trace)
    want = sql(config, f"SELECT count(*) FROM logs WHERE trace_id = '{trace}'")[0][0]
    assert len(got) == want > 0 and [r["time"] for r in got] == sorted(r["time"] for r in got)
    assert {r["pod"] for r in got} == {"web-node-a", "api-node-a", "web-node-b", "api-node-b"}
    rc, _, err = run(capsys, config, "trace", trace, "--explain")
    assert "trace index chose 6 of 6 files" in err  # it is in every file
    rc, _, err = run(capsys, config, "trace", lake_trace(39), "--explain")  # i + r = 39: only rounds 1 and 2
    assert "trace index chose 2 of 6 files" in err


def test_stats_by_namespace_and_level(lake, capsys):
    _, config, n = lake
    got = rows(capsys, config, "stats", "--since", "all", "--by", "namespace,level")
    assert sum(r["lines"] for r in got) == n
    assert {(r["namespace"], r["level"]) for r in got} == {(ns, lv) for ns in ("pay", "shop") for lv in ("info", "error")}
    assert run(capsys, config, "stats", "--by", "colour")[2].strip() == \
        "loglake-query: --by 'colour': choose from namespace, pod, container, level, hour, day"


def test_tail_follows_new_lines(tmp_path):
    config = write_config(tmp_path)
    fill_lake(tmp_path, config, rounds=1, lines=5)
    proc = subprocess.Popen([sys.executable, "-m", "query.cli", "--config", str(config), "--format", "json", "tail",
                             "-f", "--lines", "3", "--interval", "0.2", "--pod", "web-node-a"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = [json.loads(proc.stdout.readline()) for _ in range(3)]
        assert [r["body"] for r in first] == [f"node-a nginx r0 i{i}" for i in (2, 3, 4)]
        fill_lake(tmp_path / "more", config, rounds=1, lines=2)  # new files, new hot files
        deadline = time.monotonic() + 20
        later = []
        while len(later) < 2 and time.monotonic() < deadline:
            later.append(json.loads(proc.stdout.readline()))
        assert [r["body"] for r in later] == ["node-a nginx r0 i0", "node-a nginx r0 i1"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


ERRORS = [
    (("sql", "SELECT colour FROM logs"), "loglake-query: unknown column 'colour': the logs view has time,"),
    (("logs", "--since", "yesterday-ish"), "loglake-query: bad time expression 'yesterday-ish': use a duration"),
    (("logs", "--level", "loud"), "loglake-query: unknown level 'loud': use one of trace, debug"),
    (("logs", "--since", "1h", "--until", "2h"), "loglake-query: --since is later than --until; swap them"),
    (("logs", "--tz", "Mars/Olympus"), "loglake-query: unknown time zone 'Mars/Olympus'"),
]


@pytest.mark.parametrize("argv,message", ERRORS)
def test_mistakes_are_one_sentence(lake, capsys, argv, message):
    _, config, _ = lake
    rc, out, err = run(capsys, config, *argv)
    assert rc == 1 and err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err


def test_empty_and_missing_catalog(tmp_path, capsys):
    config = write_config(tmp_path)
    rc, _, err = run(capsys, config, "logs")
    assert rc == 1 and err.startswith(f"loglake-query: there is no catalog at {tmp_path / 'lake' / 'catalog.sqlite'}")
    assert aggregator(["--config", str(config), "--once"]) == 0  # nothing to consume: an empty catalog
    capsys.readouterr()
    rc, _, err = run(capsys, config, "trace", "abc")
    assert rc == 1 and "lists no stored files yet" in err and err.count("\n") == 1


def test_missing_key_and_unreadable_file(tmp_path, capsys):
    config = write_config(tmp_path)
    fill_lake(tmp_path, config, rounds=1, lines=3)
    key = tmp_path / "lake" / "keys" / "master.key"
    saved = key.read_bytes()
    key.unlink()
    rc, _, err = run(capsys, config, "logs", "--since", "all")
    assert rc == 1 and "encryption key file" in err and "does not exist" in err and err.count("\n") == 1
    key.write_bytes(saved)
    key.chmod(0o600)
    victim = next((tmp_path / "lake" / "hot").rglob("*.parquet"))
    victim.write_bytes(b"PAR1" + b"\0" * 64)
    rc, _, err = run(capsys, config, "logs", "--since", "all")
    assert rc == 1 and "a stored file is unreadable" in err and "loglake-aggregator verify" in err
    with pytest.raises(StorageError):  # --debug lets the exception (and its traceback) through
        q(["--config", str(config), "--debug", "logs", "--since", "all"])
