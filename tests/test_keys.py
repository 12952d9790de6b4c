"""Envelope encryption: wrapped data keys, master-key rotation, destruction (crypto-shredding)."""

from __future__ import annotations

import base64
import os
import shutil
import sqlite3
import sys

import duckdb
import pytest

from aggregator.cli.run import main as aggregator
from lake.storage import digest
from query.cli import main as query_cli
from runtime.errors import EncryptionKeyError
from shipper.cli import main as shipper
from tests.conftest import stored_rows, write_config, write_sample_logs


@pytest.fixture
def stored(tmp_path):
    expected = write_sample_logs(tmp_path)
    config = write_config(tmp_path)
    assert shipper(["--config", str(config), "--once"]) == 0
    assert aggregator(["--config", str(config), "--once"]) == 0
    return tmp_path, config, expected


def catalog_rows(tmp_path, sql):
    return sqlite3.connect(tmp_path / "lake" / "catalog.sqlite").execute(sql).fetchall()


def test_data_keys_are_per_day_and_tier_and_stored_wrapped(stored):
    tmp_path, config, _ = stored
    (key_id, scope, wrapped), = catalog_rows(tmp_path, "SELECT key_id, scope, wrapped FROM data_keys")
    assert scope == "hot_20261124" and key_id.startswith("dk_hot_20261124_")
    assert len(wrapped) == 12 + 32 + 16                       # nonce + key + GCM tag: not the raw key
    files = catalog_rows(tmp_path, "SELECT DISTINCT key_id FROM files")
    assert files == [(key_id,)]


def test_rotation_rewraps_without_rewriting_data(stored, capsys):
    tmp_path, config, expected = stored
    parquet = next((tmp_path / "lake" / "hot").rglob("*.parquet"))
    before = digest(str(parquet), None)[1], catalog_rows(tmp_path, "SELECT wrapped FROM data_keys")
    new_key = tmp_path / "new-master.key"
    assert aggregator(["--config", str(config), "keys", "rotate", "--new-key-file", str(new_key)]) == 0
    assert "rewrapped 1 data keys" in capsys.readouterr().out
    assert digest(str(parquet), None)[1] == before[0]                   # no file rewritten
    assert catalog_rows(tmp_path, "SELECT wrapped FROM data_keys") != before[1]
    # the old master no longer opens the keys; the new one does
    assert query_cli(["--config", str(config), "sql", "SELECT 1 FROM logs"]) == 1
    assert "not the master key" in capsys.readouterr().err
    shutil.copy(new_key, tmp_path / "lake" / "keys" / "master.key")
    assert stored_rows(config) == expected


def test_destroyed_key_makes_every_copy_unreadable(stored, capsys):
    tmp_path, config, _ = stored
    (key_id, wrapped), = catalog_rows(tmp_path, "SELECT key_id, wrapped FROM data_keys")
    backup = tmp_path / "backup.parquet"
    shutil.copy(next((tmp_path / "lake" / "hot").rglob("*.parquet")), backup)
    # a key files still need is destroyed only with --force, which lists what goes with it
    assert aggregator(["--config", str(config), "keys", "destroy", key_id]) == 1
    assert "still encrypts 1 files (5 records" in capsys.readouterr().err
    assert aggregator(["--config", str(config), "keys", "destroy", key_id, "--force"]) == 0
    assert "unreadable from now on: hot hot/spool/node-a/" in capsys.readouterr().out
    assert catalog_rows(tmp_path, "SELECT length(wrapped), destroyed_at IS NOT NULL FROM data_keys") == [(0, 1)]
    assert query_cli(["--config", str(config), "sql", "SELECT 1 FROM logs"]) == 1
    assert "lists no stored files yet" in capsys.readouterr().err
    # the lake accounts for the records that went with the key: verify passes
    assert aggregator(["--config", str(config), "verify"]) == 0, capsys.readouterr().out
    # the backup copy cannot be opened with any key the system still holds
    con = duckdb.connect()
    con.execute(f"PRAGMA add_parquet_key('{key_id}', '{base64.b64encode(os.urandom(32)).decode()}')")
    with pytest.raises(duckdb.Error, match="AES tag"):
        con.execute(f"SELECT * FROM read_parquet('{backup}', encryption_config={{footer_key: '{key_id}'}})").fetchall()
    # and the wrapped key is gone from the catalog's files (secure_delete, WAL truncated)
    for f in (tmp_path / "lake").glob("catalog.sqlite*"):
        assert wrapped not in f.read_bytes(), f"wrapped key still readable in {f.name}"


def test_master_key_from_environment_and_command(tmp_path, monkeypatch):
    expected = write_sample_logs(tmp_path)
    raw = base64.b64encode(os.urandom(32)).decode()
    config = write_config(tmp_path)
    monkeypatch.setenv("LOGLAKE_AGGREGATOR_MASTER_KEY", raw)
    assert shipper(["--config", str(config), "--once"]) == 0
    assert aggregator(["--config", str(config), "--once"]) == 0
    assert not (tmp_path / "lake" / "keys" / "master.key").exists()   # no key file when one is given
    assert stored_rows(config) == expected
    monkeypatch.delenv("LOGLAKE_AGGREGATOR_MASTER_KEY")
    (tmp_path / "kms.py").write_text(f"print({raw!r})\n")
    monkeypatch.setenv("LOGLAKE_AGGREGATOR_MASTER_KEY_COMMAND", f"{sys.executable} {tmp_path / 'kms.py'}")
    assert stored_rows(config) == expected


@pytest.mark.parametrize("value, message", [("short", "is not a base64 32-byte key"),
                                            (None, "cannot be run")])
def test_bad_master_key_sources(tmp_path, monkeypatch, value, message):
    from lake import keys
    if value is not None:
        with pytest.raises(EncryptionKeyError, match=message):
            keys.load_master(tmp_path / "none", env_key=value)
    else:
        with pytest.raises(EncryptionKeyError, match=message):
            keys.load_master(tmp_path / "none", command="/nonexistent/kms-hook")
