"""A selection read in shares at once, one DuckDB connection each (Lake.select), gives exactly the rows
the same selection read as one query gives: same rows, same order, same limit, and the same errors."""

from __future__ import annotations

import importlib
from pathlib import Path

import duckdb
import orjson
import pytest

from aggregator.cli.run import main as aggregator
from lake import duck
from lake.selector import Selector
from query import plan
from query.cli import main as query_cli
from query.connect import IN_TIME_ORDER, NEWEST_FIRST, Lake, Selection
from query.filters import Filters
from runtime.errors import StorageError
from tests.conftest import cri, fill_lake, write_config
from tests.test_semantic_names import UID1, ship

WHAT = {"command": "test"}
COLUMNS = "time, namespace, pod, container, severity_text AS level, trace_id, body"


def message(node: str, container: str, r: int, i: int) -> str:
    return f"{node} {container} r{r} i{i} GET /api/v1/orders/{i * 7919 % 100000} took {i * 7 % 97}ms"


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """300 warm files, one per partition and hour over 150 hours, so a needle's files are under several
    days' data keys, a scan each; four DuckDB threads, so there are shares whatever this machine's cores."""
    tmp = tmp_path_factory.mktemp("shared")
    config = write_config(tmp, aggregator={"parquet_row_group_size": 2048},
                          tiers={"warm_after_s": 0, "delete_grace_s": 0, "cold_after_s": 3650 * 86400,
                                 "warm_row_group_size": 2048})
    fill_lake(tmp, config, rounds=3, lines=3000, step_s=60, message=message)
    assert aggregator(["--config", str(config), "compact"]) == 0
    with pytest.MonkeyPatch.context() as mp:
        connect = duck.connect
        mp.setattr(duck, "connect", lambda threads=None: connect(threads=4))
        lake = Lake(str(config))
        lake.config_file = str(config)   # type: ignore[attr-defined]   # for the CLI's test
        yield lake
        lake.close()


def shared_and_whole(lake: Lake, needle: str, order: tuple[tuple[str, bool], ...],
                     limit: int | None) -> tuple[object, object]:
    f = Filters(Selector(), grep=needle)
    where, params = f.where()
    chosen = plan.select(lake.catalog, f, lake.keyring.get)
    selection = Selection(COLUMNS, where, tuple(params), order, limit)
    shared = lake.select(chosen.files, selection, rows=chosen.row_ranges(), what=WHAT)
    whole = lake.query(chosen.files, selection.sql, params, rows=chosen.row_ranges(), what=WHAT)
    return shared, whole


@pytest.mark.parametrize("order", [IN_TIME_ORDER, NEWEST_FIRST], ids=["oldest first", "newest first"])
@pytest.mark.parametrize("limit", [None, 1, 5, 40, 10_000])
@pytest.mark.parametrize("needle", ["took 5ms", "orders/79190 ", " i14 GET", "no such line"])
def test_a_selection_read_in_shares_is_the_one_read_at_once(lake, needle, order, limit, monkeypatch):
    monkeypatch.setattr(importlib.import_module("query.connect"), "SHARED_SCANS", 2)
    merged: list[list[int]] = []
    merge = Selection.merge
    monkeypatch.setattr(Selection, "merge", lambda self, shares: merged.append([t.num_rows for t in shares])
                        or merge(self, shares))
    shared, whole = shared_and_whole(lake, needle, order, limit)
    assert shared.equals(whole), f"{needle!r}: shares gave {shared.num_rows} rows, one read {whole.num_rows}"
    if needle == "no such line":   # only the index's false positives (about 1%) are read
        assert shared.num_rows == 0
    elif limit is None:   # without a limit the merge could hold everything: one query, which can spill
        assert merged == []
    else:
        assert len(merged) == 1 and sum(n > 0 for n in merged[0]) >= 2, f"{needle!r}: not read in shares: {merged}"
    if limit == 1 and needle != "no such line":   # the limit is of the whole, not of each share
        assert shared.num_rows == 1


def test_loglake_query_logs_in_shares_prints_what_one_query_prints(lake, capsys, monkeypatch):
    """Through the CLI, with shares from 2 scans on (the default threshold wants a needle over weeks)."""
    connect = importlib.import_module("query.connect")   # (the package's ``connect`` is a function)
    monkeypatch.setattr(connect, "SHARED_SCANS", 2)
    merged: list[int] = []
    merge = Selection.merge
    monkeypatch.setattr(Selection, "merge", lambda self, shares: merged.append(len(shares)) or merge(self, shares))
    grep = ["--config", lake.config_file, "logs", "--since", "all", "--grep", " i14 GET", "--limit", "7", "--explain"]
    assert query_cli([*grep, "-o", "json"]) == 0
    shared = capsys.readouterr()
    assert len(merged) == 1 and merged[0] >= 2 and "needle index chose" in shared.err, shared.err.splitlines()[0]
    monkeypatch.setattr(connect, "SHARED_SCANS", 10**9)
    assert query_cli([*grep, "-o", "json"]) == 0
    assert shared.out == capsys.readouterr().out and len(merged) == 1
    assert [orjson.loads(line)["body"].split()[3] for line in shared.out.splitlines()] == ["i14"] * 7


def test_a_share_that_fails_says_why_and_leaves_the_lake_usable(lake, monkeypatch):
    monkeypatch.setattr(importlib.import_module("query.connect"), "SHARED_SCANS", 2)
    f = Filters(Selector(), grep="took 5ms")
    where, params = f.where()
    chosen = plan.select(lake.catalog, f, lake.keyring.get)
    selection = Selection(COLUMNS, where, tuple(params), IN_TIME_ORDER)
    want = lake.select(chosen.files, selection, rows=chosen.row_ranges(), what=WHAT)
    victim = lake.storage.location(chosen.files[-1].tier, chosen.files[-1].path)
    with open(victim, "rb") as fh:
        saved = fh.read()
    with open(victim, "wb") as fh:
        fh.write(saved[: len(saved) // 2])
    with pytest.raises(StorageError, match="verify"):
        lake.select(chosen.files, selection, rows=chosen.row_ranges(), what=WHAT)
    with open(victim, "wb") as fh:
        fh.write(saved)
    # every connection is idle and usable again; the failure is on the audit trail
    assert lake.select(chosen.files, selection, rows=chosen.row_ranges(), what=WHAT).equals(want)
    outcomes = [e["details"].get("status") for e in lake.audit_log.entries() if e["action"] == "query-result"]
    assert outcomes[-3:] == ["ok", "failed", "ok"]


def test_the_share_connections_keep_the_sandbox(lake):
    lake._connection()
    assert lake._shares
    for share in lake._shares:
        with pytest.raises(duckdb.PermissionException):
            share.execute("SELECT * FROM read_text('/etc/passwd')")
        with pytest.raises(duckdb.InvalidInputException, match="locked"):
            share.execute("SET enable_external_access = true")


def pod_run(tmp: Path, restart: int, day: int, body: str) -> None:
    path = tmp / "logs" / "pods" / f"shop_web-1_{UID1}" / "nginx" / f"{restart}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cri(f"2026-11-{day:02d}T10:00:00.000000000Z", body))


def test_previous_is_never_read_in_shares(tmp_path, capsys, monkeypatch):
    """--previous compares a row with every run of its container, which one share does not hold: runs 0 and
    1 on one day, 2 and 3 on later days, so under three data keys (three scans); the run before the latest
    is 2, whatever the shares."""
    for restart, day in ((0, 20), (1, 20), (2, 22), (3, 24)):
        pod_run(tmp_path, restart, day, f"nginx run{restart}")
    config = write_config(tmp_path, tiers={"warm_after_s": 0, "delete_grace_s": 0, "cold_after_s": 3650 * 86400})
    ship(config)
    assert aggregator(["--config", str(config), "compact"]) == 0
    connect = duck.connect
    monkeypatch.setattr(duck, "connect", lambda threads=None: connect(threads=4))
    monkeypatch.setattr(importlib.import_module("query.connect"), "SHARED_SCANS", 2)
    for argv in (["logs", "--previous"], ["logs", "--previous", "--grep", "nginx run"]):
        capsys.readouterr()
        assert query_cli(["--config", str(config), "-o", "json", *argv]) == 0
        assert [orjson.loads(line)["body"] for line in capsys.readouterr().out.splitlines()] == ["nginx run2"]
