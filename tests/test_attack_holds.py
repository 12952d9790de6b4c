"""Attacks on legal holds and crypto-shredding, through the real commands.

A hold must beat every command that could change or shred a held file (keys destroy, compaction), and
an erasure must leave no key alive that opens a copy of an erased record, backups taken before
compaction included.
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import duckdb
import orjson
import pytest

import query
from aggregator import config as agg_config
from aggregator.cli.run import main as aggregator
from lake import keys
from lake.catalog.sqlite import SqliteCatalog
from query.cli import main as q
from runtime.errors import CatalogConflictError, EncryptionKeyError
from tests.conftest import fill_lake, write_config


def lake_config(tmp: Path) -> Path:
    return write_config(tmp, tiers={"warm_after_s": 0, "delete_grace_s": 0, "cold_after_s": 10**9,
                                    "compact_interval_s": 0},
                        retention={"default_days": 3650})


@pytest.fixture
def lake(tmp_path):
    config = lake_config(tmp_path)
    n = fill_lake(tmp_path, config, rounds=2, lines=30)
    return tmp_path, config, n


def catalog(tmp: Path) -> SqliteCatalog:
    return SqliteCatalog(tmp / "lake" / "catalog.sqlite")


def count(config: Path, where: str = "TRUE") -> int:
    return query.connect(str(config)).execute(f"SELECT count(*) FROM logs WHERE {where}").fetchone()[0]


def live_keys(config: Path) -> list[keys.DataKey]:
    """Every data key the lake can still unwrap: what an attacker holding the master key can use."""
    settings = agg_config.load(str(config))
    cat = SqliteCatalog(settings.aggregator.catalog_path)
    ring = keys.KeyRing(cat, keys.master_for(settings.aggregator))
    return [ring.get(k) for k, _, _, destroyed in cat.data_key_list() if not destroyed]


def opens(path: Path, candidates: list[keys.DataKey]) -> list[str]:
    """The keys among ``candidates`` that decrypt the Parquet file at ``path``."""
    out = []
    for key in candidates:
        con = duckdb.connect()
        con.execute(f"PRAGMA add_parquet_key('{key.key_id}', '{key.b64}')")
        try:
            con.execute(f"SELECT count(*) FROM read_parquet('{path}', encryption_config={{footer_key: "
                        f"'{key.key_id}'}})").fetchone()
            out.append(key.key_id)
        except duckdb.Error:
            pass
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_keys_destroy_refuses_a_key_a_held_file_needs_even_with_force(lake, capsys):
    tmp, config, n = lake
    assert aggregator(["--config", str(config), "hold", "add", "-n", "pay", "--reason", "case 12"]) == 0
    held = [f for f in catalog(tmp).files() if "pay" in f.namespaces]
    capsys.readouterr()
    for force in ([], ["--force"]):
        assert aggregator(["--config", str(config), "keys", "destroy", held[0].key_id, *force]) == 1
        err = capsys.readouterr().err
        assert "legal hold 1 (namespace=pay: 'case 12') keeps; release the hold first" in err
        assert "Traceback" not in err
    assert not [k for k, _, _, destroyed in catalog(tmp).data_key_list() if destroyed]
    assert count(config) == n
    assert aggregator(["--config", str(config), "verify"]) == 0


def test_compaction_leaves_held_files_byte_for_byte(lake, capsys):
    """The issue's case: hold, export, compact with warm_after_s=0: the exported hot files stay."""
    tmp, config, n = lake
    assert aggregator(["--config", str(config), "hold", "add", "--pod", "web-node-a",
                       "--reason", "case 12"]) == 0
    case = tmp / "case.zip"
    assert q(["--config", str(config), "export", "--since", "all", "--pod", "web-node-a", "--out", str(case)]) == 0
    manifest = orjson.loads(zipfile.ZipFile(case).read("manifest.json"))
    sources = {s["path"]: s["sha256"] for s in manifest["sources"]}
    assert sources and all(p.startswith("hot/spool/node-a/") for p in sources)
    before = {f.path for f in catalog(tmp).files("hot")}
    assert aggregator(["--config", str(config), "compact"]) == 0
    after = {f.path: f for f in catalog(tmp).files()}
    # node-a's hot files (each holds web-node-a lines) stay exactly as exported; node-b's were compacted
    for path, digest in sources.items():
        assert path in after and after[path].sha256 == digest == sha256(tmp / "lake" / path)
    assert {p for p in before if p.startswith("hot/spool/node-b/")}.isdisjoint(after)
    assert any(f.tier == "warm" for f in after.values())
    assert count(config) == n
    capsys.readouterr()
    assert aggregator(["--config", str(config), "verify"]) == 0, capsys.readouterr().out
    # released, the files are compacted like any other
    assert aggregator(["--config", str(config), "hold", "release", "1", "--reason", "case closed"]) == 0
    assert aggregator(["--config", str(config), "compact"]) == 0
    assert not catalog(tmp).files("hot") and count(config) == n


def test_erasure_after_compaction_shreds_the_keys_of_every_earlier_copy(lake, capsys):
    """The issue's case: compact, then erase: a backup of the pre-compaction hot files must not open."""
    tmp, config, n = lake
    pay = count(config, "namespace = 'pay'")
    backup = tmp / "backup"
    shutil.copytree(tmp / "lake" / "hot", backup)
    assert aggregator(["--config", str(config), "compact"]) == 0
    assert not catalog(tmp).files("hot")
    warm = catalog(tmp).files("warm")
    assert all(f.key_lineage for f in warm)  # each warm file names the hot keys its records came under
    assert aggregator(["--config", str(config), "erase", "-n", "pay", "--reason", "GDPR-7"]) == 0
    out = capsys.readouterr().out
    assert f"done: {pay} records deleted" in out
    assert count(config, "namespace = 'pay'") == 0 and count(config) == n - pay
    backups = sorted(backup.rglob("*.parquet"))
    assert len(backups) == 4
    remaining = live_keys(config)
    for path in backups:
        assert opens(path, remaining) == [], f"{path.name} still opens"
    # every key that ever encrypted an erased record is destroyed
    destroyed = {k for k, _, _, d in catalog(tmp).data_key_list() if d}
    assert {k for f in warm for k in f.lineage} <= destroyed
    capsys.readouterr()
    assert aggregator(["--config", str(config), "verify"]) == 0, capsys.readouterr().out


def test_a_key_a_held_file_needs_is_retired_then_destroyed_once_the_hold_is_released(lake, capsys):
    tmp, config, n = lake
    backup = tmp / "backup"
    shutil.copytree(tmp / "lake" / "hot", backup)
    assert aggregator(["--config", str(config), "hold", "add", "--pod", "web-node-a", "--reason", "case 12"]) == 0
    assert aggregator(["--config", str(config), "compact"]) == 0   # node-b's hot files become warm
    capsys.readouterr()
    assert aggregator(["--config", str(config), "erase", "-n", "pay", "--reason", "GDPR-8"]) == 0
    out = capsys.readouterr().out
    # node-a's hot files are held (their pay lines too); node-b's pay lines went, but node-b's hot key is
    # also node-a's (one per tier and day): it cannot go while node-a's held files need it
    assert "not destroyed yet (a held file still needs them" in out
    retired = catalog(tmp).retired_data_keys()
    assert retired
    node_b_backups = sorted(backup.glob("spool/node-b/*.parquet"))
    assert any(opens(p, live_keys(config)) for p in node_b_backups)  # honest: still opens, and said so
    # a retired key is never used for a new file
    cat = catalog(tmp)
    assert all(cat.live_data_key(scope) is None or cat.live_data_key(scope)[0] not in retired
               for _, scope, _, _ in cat.data_key_list())
    assert aggregator(["--config", str(config), "hold", "release", "1", "--reason", "case closed"]) == 0
    assert aggregator(["--config", str(config), "retention"]) == 0
    assert not catalog(tmp).retired_data_keys()
    remaining = live_keys(config)
    for path in node_b_backups:
        assert opens(path, remaining) == []
    assert count(config, "namespace = 'pay' AND pod LIKE '%node-b'") == 0
    # the erasure a hold kept from finishing went on at the release
    assert count(config, "namespace = 'pay'") == 0 and catalog(tmp).pending_erasures() == []
    capsys.readouterr()
    assert aggregator(["--config", str(config), "verify"]) == 0, capsys.readouterr().out


def test_verify_reports_a_file_whose_key_is_gone_instead_of_crashing(lake, capsys):
    tmp, config, _ = lake
    victim = catalog(tmp).files()[0]
    catalog(tmp).destroy_data_key(victim.key_id)   # behind the tool's back, e.g. a bad restore
    capsys.readouterr()
    assert aggregator(["--config", str(config), "verify"]) == 1
    out = capsys.readouterr().out
    assert f"unreadable: hot {victim.path}: data key {victim.key_id} was destroyed" in out
    assert out.strip().endswith("verify: FAILED") and "Traceback" not in out


def test_keys_destroy_force_lists_and_removes_what_becomes_unreadable(lake, capsys):
    tmp, config, n = lake
    victim = catalog(tmp).files()[0]
    users = [f for f in catalog(tmp).files() if f.key_id == victim.key_id]
    capsys.readouterr()
    assert aggregator(["--config", str(config), "keys", "destroy", victim.key_id]) == 1
    assert f"still encrypts {len(users)} files" in capsys.readouterr().err
    assert aggregator(["--config", str(config), "keys", "destroy", victim.key_id, "--force"]) == 0
    out = capsys.readouterr().out
    assert all(f"unreadable from now on: {f.tier} {f.path} ({f.rows} records)" in out for f in users)
    assert count(config) == n - sum(f.rows for f in users)
    with pytest.raises(EncryptionKeyError, match="destroyed"):
        keys.KeyRing(catalog(tmp), keys.master_for(agg_config.load(str(config)).aggregator)).get(victim.key_id)
    entries = [orjson.loads(x) for x in (tmp / "lake" / "audit" / "audit.jsonl").read_text().splitlines()]
    assert [e["details"]["status"] for e in entries if e["action"] == "key-destroy"] == ["started", "done"]
    assert aggregator(["--config", str(config), "verify"]) == 0  # the removed records are accounted for


def test_an_erasure_a_hold_kept_from_finishing_finishes_when_the_hold_is_released(lake, capsys):
    """Found by the attacker's review: records beside held ones in a file were never erased."""
    tmp, config, n = lake
    assert aggregator(["--config", str(config), "hold", "add", "--pod", "web-node-a", "--reason", "case 7"]) == 0
    capsys.readouterr()
    assert aggregator(["--config", str(config), "erase", "--pod", "api-node-a", "--reason", "GDPR-9"]) == 0
    assert "erasure request 1 stays pending" in capsys.readouterr().out
    assert count(config, "pod = 'api-node-a'") > 0       # held beside web-node-a's lines
    assert aggregator(["--config", str(config), "retention"]) == 0
    assert count(config, "pod = 'api-node-a'") > 0       # still held: the retention run leaves it pending
    assert aggregator(["--config", str(config), "hold", "release", "1", "--reason", "closed"]) == 0
    out = capsys.readouterr().out
    assert "pending erasure 1:" in out and "finished" in out
    assert count(config, "pod = 'api-node-a'") == 0 and count(config, "pod = 'web-node-a'") > 0
    assert catalog(tmp).pending_erasures() == []
    assert aggregator(["--config", str(config), "verify"]) == 0, capsys.readouterr().out


def test_a_hold_placed_while_compaction_runs_still_wins(lake):
    """Found by the attacker's review: jobs planned before the hold replaced its files."""
    tmp, config, n = lake
    settings = agg_config.load(str(config))
    from aggregator.compaction import Compactor
    compactor = Compactor.open(settings, keys.master_for(settings.aggregator))
    try:
        jobs = compactor.plan_warm(10**19)
        assert jobs
        before = {f.path: f.sha256 for f in catalog(tmp).files()}
        assert aggregator(["--config", str(config), "hold", "add", "-n", "pay", "--reason", "race"]) == 0
        with pytest.raises(CatalogConflictError, match="legal hold 1 .* was placed on .* while it was being replaced"):
            compactor.execute(jobs[0])
    finally:
        compactor.close()
    assert {f.path: f.sha256 for f in catalog(tmp).files()} == before and count(config) == n


def test_a_glob_with_a_question_mark_is_a_glob_not_a_placeholder(lake, capsys):
    """Found by the attacker's review: '?' in a glob shifted the next value into raw SQL."""
    tmp, config, n = lake
    capsys.readouterr()
    assert aggregator(["--config", str(config), "erase", "-n", "sho?", "--pod", "web-node-?",
                       "--reason", "t", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "erasure: 0 files to delete, 4 to rewrite" in out and "120 rows in 4 files" in out  # web-node-a/b
    assert "dry run: nothing was changed" in out and "Traceback" not in out
    assert aggregator(["--config", str(config), "erase", "-n", "sho?", "--pod", "x'; SELECT 1; --",
                       "--reason", "t", "--dry-run"]) == 0
    assert "0 files to delete, 0 to rewrite" in capsys.readouterr().out
