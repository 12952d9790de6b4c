"""The audit trail records who did what; verify catches every kind of tampering with it."""

from __future__ import annotations

import json

import pytest

from aggregator.cli.run import main as aggregator
from query.cli import main as q
from tests.conftest import fill_lake, write_config


@pytest.fixture
def audited(tmp_path, capsys):
    config = write_config(tmp_path)
    fill_lake(tmp_path, config, rounds=1, lines=5)
    assert q(["--config", str(config), "logs", "--since", "all", "-n", "shop"]) == 0
    assert aggregator(["--config", str(config), "hold", "add", "--pod", "web-*", "--reason", "case 7"]) == 0
    assert aggregator(["--config", str(config), "keys", "rotate", "--new-key-file", str(tmp_path / "m2.key")]) == 0
    # from now on the new master key opens the lake
    config.write_text(config.read_text().replace("[aggregator]\n", f'[aggregator]\nkey_file = "{tmp_path / "m2.key"}"\n'))
    capsys.readouterr()
    return tmp_path, config, tmp_path / "lake" / "audit" / "audit.jsonl"


def entries(log) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def verify(capsys, config) -> tuple[int, str]:
    rc = aggregator(["--config", str(config), "verify"])
    return rc, capsys.readouterr().out


def test_actions_and_queries_are_recorded_and_chained(audited, capsys):
    tmp, config, log = audited
    e = entries(log)
    assert [x["action"] for x in e] == ["query", "query-result", "hold-add", "keys-rotate"]
    assert e[0]["details"]["command"] == f"loglake-query --config {config} logs --since all -n shop"
    assert "namespace, '') GLOB ?" in e[0]["details"]["sql"] and e[0]["details"]["parameters"][0] == "shop"
    assert e[1]["details"] == {"query_seq": 1, "status": "ok", "rows": 10}
    assert e[2]["details"] == {"hold": 1, "selector": "pod=web-*", "reason": "case 7"}
    assert [x["seq"] for x in e] == [1, 2, 3, 4] and all(b["prev"] == a["hash"] for a, b in zip(e, e[1:]))
    assert all("@" in x["actor"] for x in e) and len({x["signer"] for x in e}) == 1
    rc, out = verify(capsys, config)
    assert rc == 0 and "audit trail: 5 entries checked, 0 problems" not in out  # verify itself is not audited
    assert "audit trail: 4 entries checked, 0 problems" in out and out.strip().endswith("verify: OK")


def _rewrite(log, change) -> None:
    lines = log.read_text().splitlines()
    log.write_text("\n".join(change(lines)) + "\n")


@pytest.mark.parametrize("change,message", [
    (lambda ls: [*ls[:2], ls[2].replace("case 7", "case 8"), ls[3]],
     "audit log line 3: (seq 3) was altered: its content does not match its hash"),
    (lambda ls: [ls[0], ls[2], ls[3]], "audit log line 2: has seq 3 after 1: entries removed"),
    (lambda ls: ls[:3], "audit log: ends at entry 3 but the catalog's head is entry 4: entries were removed from the end"),
    (lambda ls: [*ls[:2], ls[2][:40], ls[3]], "audit log line 3: is not a readable audit entry (altered)"),
])
def test_tampering_is_reported_precisely(audited, capsys, change, message):
    _, config, log = audited
    _rewrite(log, change)
    rc, out = verify(capsys, config)
    assert rc == 1 and message in out and out.strip().endswith("verify: FAILED")


def test_a_reforged_entry_fails_its_signature(audited, capsys):
    """Recomputing the hash after an edit is not enough: the signature is over the hash."""
    import hashlib

    import orjson
    _, config, log = audited
    e = entries(log)
    e[3]["details"]["data_keys_rewrapped"] = 999
    body = {k: v for k, v in e[3].items() if k not in ("hash", "sig")}
    e[3]["hash"] = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    log.write_text("".join(json.dumps(x) + "\n" for x in e))
    rc, out = verify(capsys, config)
    assert rc == 1 and "audit log line 4: (seq 4) has no valid signature from the audit key" in out
