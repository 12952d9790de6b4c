"""Bad input on real files: each case flagged or counted, the good lines around it delivered."""

from __future__ import annotations

import orjson

from aggregator.cli.run import main as aggregator
from schemas.record import FLAG_BAD_PREFIX, FLAG_INVALID_UTF8, FLAG_NON_OBJECT_JSON, FLAG_REDACTED, FLAG_TRUNCATED
from shipper import config as shipper_config
from shipper.agent import Agent
from shipper.cli import main as shipper
from shipper.transport import create
from tests.conftest import pod_log, write_config

TS = b"2026-11-24T10:00:00.000000001Z"


def test_every_kind_of_bad_line(tmp_path):
    config = write_config(tmp_path)
    log = pod_log(tmp_path, "shop", "web-1", "nginx")
    ten_mb = b"x" * (10 * 1024 * 1024)
    lines = [
        TS + b" stdout F good before",
        TS + b" stdout F bad utf8 \xff\xfe here",
        TS + b" stdout F nul \x00 byte",
        TS + b" stdout F crlf line\r",
        TS + b" stdout F ",                                   # empty
        TS + b" stdout F " + ten_mb,                          # 10 MB
        b"garbage without a CRI prefix",
        TS + b" stdout F [1,2,3]",                            # JSON, not an object
        TS + b" stdout F token Bearer abcdefghijklmnop",
        TS + b" stdout F good after",
    ]
    log.write_bytes(b"\n".join(lines) + b"\n")
    assert shipper(["--config", str(config), "--once"]) == 0
    assert aggregator(["--config", str(config), "--once"]) == 0
    import query
    rows = query.connect(str(config)).execute(
        "SELECT body, flags, length(body), source_offset, source_end FROM logs ORDER BY source_offset").fetchall()
    # every byte of the file is accounted for: each record ends where the next begins, except the cut
    # 10 MB line, whose record covers the head it kept (flagged truncated; verify reports the rest as such)
    starts = [sum(len(ln) + 1 for ln in lines[:i]) for i in range(len(lines))]
    ends = starts[1:] + [sum(len(ln) + 1 for ln in lines)]
    assert [r[3] for r in rows] == starts
    assert [r[4] for r in rows if not r[1] & FLAG_TRUNCATED] == [e for i, e in enumerate(ends) if i != 5]
    assert [r[4] - r[3] for r in rows if r[1] & FLAG_TRUNCATED] == [1024 * 1024 + 128]
    assert [(body if len(body) < 100 else body[:3], flags, n) for body, flags, n, _, _ in rows] == [
        ("good before", 0, 11),
        ("bad utf8 \ufffd\ufffd here", FLAG_INVALID_UTF8, 16),
        ("nul \x00 byte", 0, 10),
        ("crlf line", 0, 9),
        ("", 0, 0),                                           # the empty line is counted and kept
        ("xxx", FLAG_TRUNCATED, 1024 * 1024),
        ("garbage without a CRI prefix", FLAG_BAD_PREFIX, 28),
        ("[1,2,3]", FLAG_NON_OBJECT_JSON, 7),
        ("token Bearer [REDACTED]", FLAG_REDACTED, 23),
        ("good after", 0, 10),
    ]


def test_bad_input_is_counted_in_metrics(tmp_path):
    import asyncio
    config = write_config(tmp_path)
    log = pod_log(tmp_path, "shop", "web-1", "nginx")
    log.write_bytes(b"\n".join([TS + b" stdout F ok", b"no prefix", TS + b" stdout F \xff",
                                TS + b" stdout F ", TS + b" stdout F mail a@b.example"]) + b"\n")
    settings = shipper_config.load(str(config))

    async def go():
        transport = create(settings.transport, settings.shipper)
        await transport.start()
        agent = Agent(settings, transport)
        from prometheus_client import generate_latest

        from shipper.metrics import registry
        agent.files.look()
        before = generate_latest(registry(agent)).decode()
        await agent.run(once=True)
        return before, generate_latest(registry(agent)).decode()
    before, text = asyncio.run(go())
    assert f'loglake_shipper_file_lag_bytes{{path="{log}"}} {float(log.stat().st_size)}\n' in before
    assert 'loglake_shipper_errors_total{kind="bad_prefix"} 1.0\n' in text
    assert 'loglake_shipper_errors_total{kind="invalid_utf8"} 1.0\n' in text
    assert 'loglake_shipper_errors_total{kind="empty_line"} 1.0\n' in text
    assert 'loglake_shipper_errors_total{kind="nul_bytes"} 0.0\n' in text
    assert 'loglake_shipper_redactions_total{rule="email"} 1.0\n' in text
    assert "loglake_shipper_shipped_records_total 5.0\n" in text  # the empty line is kept too


def test_json_attributes_and_labels(tmp_path):
    config = write_config(tmp_path, shipper={"labels": {"cluster": "eu-1"}})
    log = pod_log(tmp_path, "shop", "web-1", "nginx")
    log.write_bytes(TS + b' stdout F {"msg":"hi","user":7}\n' + TS + b" stdout F plain\n")
    assert shipper(["--config", str(config), "--once"]) == 0
    assert aggregator(["--config", str(config), "--once"]) == 0
    import query
    rows = query.connect(str(config)).execute("SELECT body, attributes FROM logs ORDER BY source_offset").fetchall()
    assert [(b, orjson.loads(a)) for b, a in rows] == [("hi", {"cluster": "eu-1", "user": 7}),
                                                     ("plain", {"cluster": "eu-1"})]


def test_restart_inside_an_overlong_line_does_not_resume_mid_line(tmp_path):
    """The checkpoint stays at the start of a line being skipped; a restart reads it again
    (same record id: the aggregator drops the resend), never its tail as a line of its own."""
    import asyncio

    config = write_config(tmp_path, shipper={"max_record_bytes": 1024, "read_chunk_bytes": 4096})
    log = pod_log(tmp_path, "shop", "web-1", "nginx")
    long_line = TS + b" stdout F " + b"y" * 50_000
    log.write_bytes(TS + b" stdout F before\n" + long_line + b"\n" + TS + b" stdout F after\n")
    settings = shipper_config.load(str(config))

    async def partial_run() -> int:
        transport = create(settings.transport, settings.shipper)
        await transport.start()
        agent = Agent(settings, transport)
        agent.files.look()
        for _ in range(3):  # read 'before' and the head of the long line, stop while skipping it
            agent.read_once()
        src = next(iter(agent.files.active.values()))
        assert src.tail.cut_from is not None
        await agent.shutdown(deadline=None)
        return agent.positions.checkpoints.offset(src.source_id)
    saved = asyncio.run(partial_run())
    assert saved == len(TS + b" stdout F before\n")
    assert shipper(["--config", str(config), "--once"]) == 0
    assert aggregator(["--config", str(config), "--once"]) == 0
    import query
    rows = query.connect(str(config)).execute(
        "SELECT body[1:5], flags, count(*) FROM logs GROUP BY ALL ORDER BY min(source_offset)").fetchall()
    assert rows == [("befor", 0, 1), ("yyyyy", FLAG_TRUNCATED, 1), ("after", 0, 1)]
