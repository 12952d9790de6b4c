"""Retention rules, the compliance floor, holds beating retention and erasure, crypto-shredding."""

from __future__ import annotations

import shutil
import signal

import pytest

import query
from aggregator import config as agg_config
from aggregator.cli.run import main as aggregator
from aggregator.retention import Remover
from lake import keys
from lake.catalog.sqlite import SqliteCatalog
from runtime.errors import ConfigError, EncryptionKeyError
from tests.conftest import LAKE_START, fill_lake, free_port, wait_for_metrics, write_config

DAY = 86400 * 1_000_000_000
RULES = [{"name": "shop-errors", "namespace": "shop", "level": "error", "days": 1, "erasure": True},
         {"name": "pay-long", "namespace": "pa*", "days": 4000}]


def lake_config(tmp, rules=RULES, **retention):
    """The default keeps the 2026 test data for ten years, so tests that use the real clock stay true."""
    return write_config(tmp, tiers={"warm_after_s": 0, "delete_grace_s": 0, "cold_after_s": 10**9},
                        retention={"rules": rules, "default_days": 3650, **retention})


def remover(config) -> Remover:
    settings = agg_config.load(str(config))
    return Remover.open(settings, keys.master_for(settings.aggregator))


def count(config, where="TRUE") -> int:
    return query.connect(str(config)).execute(f"SELECT count(*) FROM logs WHERE {where}").fetchone()[0]


SHOP_ERRORS = "namespace = 'shop' AND severity_number BETWEEN 17 AND 20"


@pytest.fixture
def lake(tmp_path):
    config = lake_config(tmp_path)
    n = fill_lake(tmp_path, config, rounds=2, lines=30)
    return tmp_path, config, n


def test_most_specific_rule_wins_and_default_applies(tmp_path):
    config = lake_config(tmp_path, default_days=180)
    n = fill_lake(tmp_path, config, rounds=2, lines=30)
    shop_errors, pay = count(config, SHOP_ERRORS), count(config, "namespace = 'pay'")
    r = remover(config)
    plan = r.retention_plan(now_ns=LAKE_START * 10**9 + 200 * DAY)
    s = plan.summary()["by_reason"]
    # shop errors expire by their own rule; the rest of shop by the 180-day default; pay is kept 4000 days
    assert s["shop-errors"]["rows"] == shop_errors > 0
    assert s["default"]["rows"] == n - pay - shop_errors
    assert "pay-long" not in s
    plan = r.retention_plan(now_ns=LAKE_START * 10**9 + 10 * DAY)
    assert set(plan.summary()["by_reason"]) == {"shop-errors"}
    r.close()


def test_partial_expiry_rewrites_and_shreds_the_old_key(lake, capsys):
    tmp, config, n = lake
    shop_errors = count(config, SHOP_ERRORS)
    backup = tmp / "backup"
    shutil.copytree(tmp / "lake" / "hot", backup)
    old_keys = {f.key_id for f in SqliteCatalog(tmp / "lake" / "catalog.sqlite").files()}
    assert aggregator(["--config", str(config), "retention", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"shop-errors: {shop_errors} rows in 4 files" in out and "dry run: nothing was changed" in out
    assert count(config) == n
    assert aggregator(["--config", str(config), "retention"]) == 0
    out = capsys.readouterr().out
    assert f"done: {shop_errors} records deleted; 0 files deleted, 4 rewritten" in out
    assert count(config) == n - shop_errors and count(config, SHOP_ERRORS) == 0
    cat = SqliteCatalog(tmp / "lake" / "catalog.sqlite")
    assert not old_keys & {f.key_id for f in cat.files()}
    assert {k for k, _, _, destroyed in cat.data_key_list() if destroyed} == old_keys
    # the backup copy of an old file can no longer be opened: its key is gone
    r = remover(config)
    with pytest.raises(EncryptionKeyError, match="destroyed"):
        r.keyring.get(next(iter(old_keys)))
    r.close()
    assert list(backup.rglob("*.parquet"))
    assert aggregator(["--config", str(config), "verify"]) == 0  # deleted ranges explain the missing bytes


def test_compliance_floor(tmp_path, capsys):
    config = lake_config(tmp_path, rules=[{"name": "short", "namespace": "shop", "days": 7}])
    with pytest.raises(ConfigError, match="rule 'short' keeps 7 days, below the compliance floor of 180 days; "
                                          "mark it erasure = true"):
        agg_config.load(str(config))
    config = lake_config(tmp_path, rules=[], default_days=90)
    assert aggregator(["--config", str(config), "retention"]) == 1
    assert "default_days = 90 is below the compliance floor of 180 days" in capsys.readouterr().err


def test_hold_beats_retention_and_erasure(lake, capsys):
    tmp, config, n = lake
    assert aggregator(["--config", str(config), "hold", "add", "-n", "shop", "--reason", "case 42"]) == 0
    shas = {f.path: f.sha256 for f in SqliteCatalog(tmp / "lake" / "catalog.sqlite").files()}
    capsys.readouterr()
    assert aggregator(["--config", str(config), "retention"]) == 0
    out = capsys.readouterr().out
    assert "hold 1 keeps" in out and "done: 0 records deleted" in out
    assert aggregator(["--config", str(config), "erase", "--pod", "web-node-a", "--reason", "GDPR-7"]) == 0
    assert "done: 0 records deleted" in capsys.readouterr().out
    assert count(config) == n
    assert {f.path: f.sha256 for f in SqliteCatalog(tmp / "lake" / "catalog.sqlite").files()} == shas
    assert aggregator(["--config", str(config), "hold", "list"]) == 0
    assert "hold 1: namespace=shop — 'case 42'" in capsys.readouterr().out
    assert aggregator(["--config", str(config), "hold", "release", "1", "--reason", "case closed"]) == 0
    assert aggregator(["--config", str(config), "erase", "--pod", "web-node-a", "--reason", "GDPR-7"]) == 0
    assert count(config, "pod = 'web-node-a'") == 0 and count(config) == n - 60


def test_erasure_reaches_every_tier(tmp_path, capsys):
    config = lake_config(tmp_path)
    n = fill_lake(tmp_path, config, rounds=3, lines=60)
    c = SqliteCatalog(tmp_path / "lake" / "catalog.sqlite")
    assert aggregator(["--config", str(config), "compact"]) == 0
    n += fill_lake(tmp_path, config, rounds=1, lines=10)  # and some hot
    assert {f.tier for f in c.files()} == {"hot", "warm"}
    victims = count(config, "pod = 'api-node-b'")
    assert aggregator(["--config", str(config), "erase", "--pod", "api-node-b", "--since", "2026-11-20T23:30:00Z",
                       "--reason", "DSR-9"]) == 0
    assert count(config, "pod = 'api-node-b' AND time >= '2026-11-20 23:30:00'") == 0
    assert count(config) == n - victims + count(config, "pod = 'api-node-b'")
    assert aggregator(["--config", str(config), "verify"]) == 0


def test_the_running_aggregator_applies_retention_on_schedule(tmp_path):
    port = free_port()
    config = write_config(tmp_path, aggregator={"metrics_address": f"127.0.0.1:{port}"},
                          retention={"interval_s": 1, "default_days": 3650, "rules": [
                              {"name": "pay-gone", "namespace": "pay", "days": 0, "erasure": True}]})
    n = fill_lake(tmp_path, config, rounds=1, lines=10)
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "aggregator.cli", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_metrics(port, "loglake_aggregator_retention_deleted_rows_total 20.0\n", "no scheduled retention", 20)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert count(config) == n - 20 and count(config, "namespace = 'pay'") == 0
