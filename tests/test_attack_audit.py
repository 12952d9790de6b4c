"""Attacks on the access audit and the SQL sandbox, through the real commands.

Every read is on record before it runs, a failing or refused one too; user SQL cannot reach a file
outside the lake's tiers, write anywhere, or change the sandbox; the trail cannot be re-signed by
removing or replacing its key; and the recorded OS identity is not what the environment claims.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import stat
from pathlib import Path

import orjson
import pytest

import query
from aggregator.cli.run import main as aggregator
from query.cli import main as q
from tests.conftest import fill_lake, write_config


@pytest.fixture
def lake(tmp_path, capsys):
    config = write_config(tmp_path)
    n = fill_lake(tmp_path, config, rounds=1, lines=5)
    capsys.readouterr()
    return tmp_path, config, n


def entries(tmp: Path) -> list[dict]:
    log = tmp / "lake" / "audit" / "audit.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def sql(config: Path, text: str, capsys) -> tuple[int, str, str]:
    rc = q(["--config", str(config), "sql", text])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_copy_then_error_writes_nothing_and_is_on_record(lake, capsys, monkeypatch):
    """The issue's case: COPY … TO then error('x') wrote every record in clear and left no entry."""
    tmp, config, _ = lake
    monkeypatch.chdir(tmp)
    text = "COPY (SELECT * FROM logs) TO 'stolen.parquet'; SELECT error('x')"
    rc, out, err = sql(config, text, capsys)
    assert rc == 1 and "give exactly one SQL statement (found 2)" in err and "Traceback" not in err
    assert not (tmp / "stolen.parquet").exists()
    asked, outcome = entries(tmp)[-2:]
    assert asked["action"] == "query" and asked["details"]["sql"] == text
    assert outcome["action"] == "query-result" and outcome["details"] == {
        "query_seq": asked["seq"], "status": "failed", "error": "QueryError"}


def test_a_failing_query_is_audited_and_its_error_text_stays_out_of_the_trail(lake, capsys):
    tmp, config, _ = lake
    text = "SELECT error((SELECT string_agg(body, '|') FROM logs))"
    rc, _, err = sql(config, text, capsys)
    assert rc == 1 and "node-a nginx r0 i0" in err   # the caller may see what they may query…
    asked, outcome = entries(tmp)[-2:]
    assert asked["details"]["sql"] == text and outcome["details"]["status"] == "failed"
    assert "node-a nginx" not in json.dumps(outcome)  # …but the trail does not become a copy of the logs


@pytest.mark.parametrize("text, refusal", [
    ("SELECT * FROM read_text('/etc/hostname')", "file system operations are disabled"),
    ("SELECT * FROM read_text('{lake}/keys/master.key')", "file system operations are disabled"),
    ("SELECT * FROM read_text('{lake}/hot/../keys/master.key')", "file system operations are disabled"),
    ("SELECT * FROM read_blob('{lake}/catalog.sqlite')", "file system operations are disabled"),
    ("SELECT * FROM read_text('{lake}/audit/audit.jsonl')", "file system operations are disabled"),
    ("SELECT * FROM glob('/*')", "file system operations are disabled"),
    ("SELECT * FROM read_csv('https://example.com/x.csv')", "file system operations are disabled"),
    ("COPY (SELECT * FROM logs) TO '{lake}/hot/stolen.csv'", "only read-only SQL (SELECT) is allowed here, not COPY"),
    ("ATTACH '{tmp}/x.db'", "not ATTACH"),
    ("INSTALL httpfs", "not LOAD"),
    ("LOAD httpfs", "not LOAD"),
    ("SET enable_external_access = true", "not SET"),
    ("PRAGMA add_parquet_key('k', 'AAAA')", "not PRAGMA"),
    ("CALL duckdb_settings()", "not CALL"),
    ("CREATE TABLE t AS SELECT * FROM logs", "not CREATE"),
    ("EXPORT DATABASE '{tmp}/dump'", "not EXPORT"),
    ("SELECT 1; SELECT 2", "give exactly one SQL statement"),
    # EXPLAIN ANALYZE runs what it explains (found by the attacker's review: it overwrote a held file)
    ("EXPLAIN ANALYZE COPY (SELECT body FROM logs) TO '{lake}/hot/stolen.csv'", "not EXPLAIN ANALYZE"),
    ("explain\nanalyze create table t as select 1", "not EXPLAIN ANALYZE"),
    ("EXPLAIN ANALYZE SELECT 1", "not EXPLAIN ANALYZE"),
    ("EXPLAIN COPY (SELECT 1) TO '{lake}/hot/stolen.csv'", "only EXPLAIN of one SELECT"),
    ("/* x */ EXPLAIN ANALYZE SELECT 1", "only EXPLAIN of one SELECT"),
])
def test_user_sql_cannot_leave_the_sandbox(lake, capsys, text, refusal):
    tmp, config, _ = lake
    text = text.format(lake=tmp / "lake", tmp=tmp)
    master = (tmp / "lake" / "keys" / "master.key").read_text().strip()
    rc, out, err = sql(config, text, capsys)
    assert rc == 1 and refusal in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert master not in out + err
    assert not (tmp / "lake" / "hot" / "stolen.csv").exists() and not (tmp / "x.db").exists()
    asked, outcome = entries(tmp)[-2:]
    assert asked["details"]["sql"] == text and outcome["details"]["status"] == "failed"


def test_reads_inside_the_sandbox_still_work(lake, capsys):
    tmp, config, n = lake
    rc, out, _ = sql(config, "SELECT count(*) AS n FROM logs", capsys)
    assert rc == 0 and f"\n{n}" in out
    rc, out, _ = sql(config, "EXPLAIN SELECT * FROM logs", capsys)
    assert rc == 0 and "PROJECTION" in out
    # the setting cannot be read back to something else either
    rc, out, _ = sql(config, "SELECT current_setting('enable_external_access') AS v", capsys)
    assert rc == 0 and "False" in out


def test_every_public_way_to_read_rows_is_audited(lake, capsys):
    from query.connect import Lake
    tmp, config, n = lake
    before = len(entries(tmp))
    con = query.connect(str(config))
    assert con.execute("SELECT count(*) FROM logs").fetchone() == (n,)
    with pytest.raises(Exception, match="not COPY"):
        con.execute(f"COPY (SELECT * FROM logs) TO '{tmp / 'api.csv'}'")
    lake = Lake(str(config))
    try:
        assert lake.query(lake.catalog.files(), "SELECT count(*) AS n FROM logs",
                          what={"command": "api"}).column("n")[0].as_py() == n
    finally:
        lake.close()
    new = entries(tmp)[before:]
    assert [(e["action"], e["details"].get("sql"), e["details"].get("status")) for e in new] == [
        ("query", "SELECT count(*) FROM logs", None),
        ("query-result", None, "ok"),
        ("query", f"COPY (SELECT * FROM logs) TO '{tmp / 'api.csv'}'", None),
        ("query-result", None, "failed"),
        ("query", "SELECT count(*) AS n FROM logs", None),
        ("query-result", None, "ok"),
    ]
    assert not (tmp / "api.csv").exists()


def test_the_python_api_hands_out_rows_not_the_connection(lake, capsys):
    """Found by the attacker's review: execute() returned DuckDB's connection, on which anything ran
    unaudited."""
    tmp, config, n = lake
    con = query.connect(str(config))
    result = con.execute("SELECT count(*) FROM logs")
    assert result.fetchone() == (n,) and result.fetchone() is None
    assert not hasattr(result, "execute") and not hasattr(con.sql("SELECT 1"), "query")
    assert con.execute("SELECT 42 AS x").arrow().column("x").to_pylist() == [42]


def test_the_spill_directory_is_private_to_the_query(lake, capsys, monkeypatch):
    """DuckDB adds its temp directory to what may be read; it must not be a shared ./.tmp."""
    tmp, config, _ = lake
    monkeypatch.chdir(tmp)
    (tmp / ".tmp").mkdir()
    (tmp / ".tmp" / "other-session.txt").write_text("spilled plaintext")
    rc, out, err = sql(config, f"SELECT * FROM read_text('{tmp}/.tmp/other-session.txt')", capsys)
    assert rc == 1 and "file system operations are disabled" in err and "spilled" not in out


def test_output_files_are_private_and_never_written_through_a_planted_link(lake, capsys):
    tmp, config, _ = lake
    out = tmp / "result.parquet"
    assert q(["--config", str(config), "sql", "SELECT * FROM logs", "--output-file", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    victim = tmp / "victim.txt"
    victim.write_text("precious")
    (tmp / "planted.parquet").symlink_to(victim)
    assert q(["--config", str(config), "sql", "SELECT * FROM logs", "--output-file", str(tmp / "planted.parquet")]) == 1
    assert "already exists" in capsys.readouterr().err and victim.read_text() == "precious"


def _rehash_without(tmp: Path, drop: set[int]) -> list[dict]:
    """An attacker's rewrite: entries removed, the chain re-linked and re-hashed, signed by a new key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    key = Ed25519PrivateKey.generate()
    (tmp / "lake" / "keys" / "audit-signing.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    prev, out = "0" * 64, []
    for e in entries(tmp):
        if e["seq"] in drop:
            continue
        e = {**e, "seq": len(out) + 1, "prev": prev}
        e.pop("sig")
        e["hash"] = hashlib.sha256(orjson.dumps({k: v for k, v in e.items() if k != "hash"},
                                                option=orjson.OPT_SORT_KEYS)).hexdigest()
        e["sig"] = base64.b64encode(key.sign(e["hash"].encode())).decode()
        prev = e["hash"]
        out.append(e)
    (tmp / "lake" / "audit" / "audit.jsonl").write_text("".join(json.dumps(e) + "\n" for e in out))
    return out


def _make_trail(config: Path) -> None:
    for ns in ("shop", "pay", "shop"):
        assert q(["--config", str(config), "logs", "--since", "all", "-n", ns]) == 0


def test_a_missing_signing_key_fails_verify_and_stops_further_entries(lake, capsys):
    tmp, config, _ = lake
    _make_trail(config)
    (tmp / "lake" / "keys" / "audit-signing.key").unlink()
    capsys.readouterr()
    assert aggregator(["--config", str(config), "verify"]) == 1
    out = capsys.readouterr().out
    assert "audit signing key" in out and "is missing" in out and out.strip().endswith("verify: FAILED")
    # no query runs unaudited, and no new key is made behind the operator's back
    assert q(["--config", str(config), "logs", "--since", "all"]) == 1
    assert "the audit signing key" in capsys.readouterr().err
    assert not (tmp / "lake" / "keys" / "audit-signing.key").exists()


def test_a_rehashed_chain_signed_by_a_new_key_fails_verify(lake, capsys):
    """The issue's case: key removed, 3 entries removed, chain re-hashed: verify said OK."""
    tmp, config, _ = lake
    _make_trail(config)
    kept = _rehash_without(tmp, {2, 3, 4})
    from lake.catalog.sqlite import SqliteCatalog
    SqliteCatalog(tmp / "lake" / "catalog.sqlite").set_audit_head(kept[-1]["seq"], kept[-1]["hash"])
    capsys.readouterr()
    assert aggregator(["--config", str(config), "verify"]) == 1
    out = capsys.readouterr().out
    assert "not the pinned ed25519:" in out and "has no valid signature from the audit key" in out
    assert q(["--config", str(config), "logs", "--since", "all"]) == 1  # nor can it append under the new key
    assert "restore the original key" in capsys.readouterr().err


def test_an_operator_held_fingerprint_catches_a_replaced_pin(lake, capsys):
    tmp, config, _ = lake
    _make_trail(config)
    pinned = entries(tmp)[0]["signer"]
    text = config.read_text().replace("[aggregator]\n", f'[aggregator]\naudit_key_fingerprint = "{pinned}"\n')
    config.write_text(text)
    assert aggregator(["--config", str(config), "verify"]) == 0
    # the attacker replaces key, trail and the catalog's pin consistently
    kept = _rehash_without(tmp, {2})
    import sqlite3
    db = sqlite3.connect(tmp / "lake" / "catalog.sqlite")
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key((tmp / "lake" / "keys" / "audit-signing.key").read_bytes(), None)
    new_fp = "ed25519:" + key.public_key().public_bytes(serialization.Encoding.Raw,
                                                        serialization.PublicFormat.Raw).hex()
    db.execute("UPDATE meta SET value = ? WHERE key = 'audit_key'", (new_fp,))
    db.execute("UPDATE meta SET value = ? WHERE key = 'audit_head'", (f"{len(kept)}:{entries(tmp)[-1]['hash']}",))
    db.commit()
    capsys.readouterr()
    assert aggregator(["--config", str(config), "verify"]) == 1
    assert f"the catalog pins audit key {new_fp}, not the {pinned}" in capsys.readouterr().out


def test_the_real_os_user_is_recorded_beside_the_claimed_name(lake, capsys, monkeypatch):
    tmp, config, _ = lake
    monkeypatch.setenv("USER", "auditor")
    monkeypatch.setenv("LOGNAME", "auditor")
    monkeypatch.delenv("LOGLAKE_ACTOR", raising=False)
    assert q(["--config", str(config), "logs", "--since", "all"]) == 0
    e = entries(tmp)[-2]
    real = pwd.getpwuid(os.geteuid()).pw_name
    assert e["actor"].startswith("auditor@") and e["os_user"] == {"uid": os.geteuid(), "name": real}
    assert aggregator(["--config", str(config), "report", "--out", str(tmp / "r.md")]) == 0
    if real != "auditor":
        assert f"(OS user {real})" in (tmp / "r.md").read_text()


def test_a_deleted_trail_with_its_pin_and_head_is_not_started_afresh(lake, capsys):
    """Found by the attacker's review: delete audit.jsonl and the catalog's pin and head, and the next
    append began a new, clean trail."""
    import sqlite3
    tmp, config, _ = lake
    assert aggregator(["--config", str(config), "hold", "add", "-n", "pay", "--reason", "case"]) == 0
    (tmp / "lake" / "audit" / "audit.jsonl").unlink()
    db = sqlite3.connect(tmp / "lake" / "catalog.sqlite")
    db.execute("DELETE FROM meta WHERE key IN ('audit_key', 'audit_head')")
    db.commit()
    capsys.readouterr()
    assert aggregator(["--config", str(config), "verify"]) == 1
    assert "the audit trail" in capsys.readouterr().out
    assert q(["--config", str(config), "logs", "--since", "all"]) == 1
    assert "is missing, but the catalog records actions that were audited" in capsys.readouterr().err
    assert not (tmp / "lake" / "audit" / "audit.jsonl").exists()
