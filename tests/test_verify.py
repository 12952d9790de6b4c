"""verify: altered, missing and unlisted files; completeness gaps when a batch never arrived; the report."""

from __future__ import annotations

import json

import query
from aggregator.cli.run import main as aggregator
from lake.catalog.sqlite import SqliteCatalog
from shipper.cli import main as shipper
from tests.conftest import cri, pod_log, write_config


def ship(tmp, config, lines=40, pod="web-1") -> list[int]:
    """One container writes ``lines`` lines; returns each line's start offset (and the file end)."""
    path = pod_log(tmp, "shop", pod, "nginx")
    text = [cri(f"2026-11-20T23:00:{i // 10:02d}.{i:09d}Z", f"line {i} " + "x" * 40) for i in range(lines)]
    path.write_text("".join(text))
    assert shipper(["--config", str(config), "--once"]) == 0
    starts = [0]
    for t in text:
        starts.append(starts[-1] + len(t.encode()))
    return starts


def verify(capsys, config) -> tuple[int, str]:
    rc = aggregator(["--config", str(config), "verify"])
    return rc, capsys.readouterr().out


def test_every_file_problem_is_reported(tmp_path, capsys):
    config = write_config(tmp_path)
    ship(tmp_path, config)
    assert aggregator(["--config", str(config), "--once"]) == 0
    ship(tmp_path, config, pod="web-2")  # a second source, a second file
    assert aggregator(["--config", str(config), "--once"]) == 0
    capsys.readouterr()
    assert verify(capsys, config)[0] == 0
    a, b = SqliteCatalog(tmp_path / "lake" / "catalog.sqlite").files()
    data = bytearray((tmp_path / "lake" / a.path).read_bytes())
    data[len(data) // 2] ^= 1
    (tmp_path / "lake" / a.path).write_bytes(bytes(data))
    (tmp_path / "lake" / b.path).unlink()
    (tmp_path / "lake" / "hot" / "stray.parquet").write_bytes(b"x")
    rc, out = verify(capsys, config)
    assert rc == 1
    assert f"altered: hot {a.path}: sha256 " in out and f"differs from the catalog's {a.sha256}" in out
    assert f"missing: hot {b.path}: listed in the catalog but not readable" in out
    assert "unlisted: hot hot/stray.parquet: on storage but not in the catalog" in out


def test_a_lost_batch_shows_as_a_gap_of_exactly_its_bytes(tmp_path, capsys):
    config = write_config(tmp_path, shipper={"batch_max_bytes": 1024})
    starts = ship(tmp_path, config)
    batches = sorted((tmp_path / "spool").rglob("*.batch"))
    assert len(batches) >= 3
    from schemas import wire
    lost = wire.to_table(wire.decode(batches[1].read_bytes()))
    lost_offsets = sorted(lost.column("source_offset").to_pylist())
    batches[1].unlink()  # lost in transit
    assert aggregator(["--config", str(config), "--once"]) == 0
    capsys.readouterr()
    rc, out = verify(capsys, config)
    first, last = lost_offsets[0], lost_offsets[-1]
    end = starts[starts.index(last) + 1]
    assert rc == 1 and "completeness: 1 source files, 1 gaps" in out
    assert f"missing: node-a:" in out and f"bytes [{first}, {end})" in out
    assert out.strip().endswith("verify: FAILED")


def test_truncated_lines_are_reported_but_not_a_failure(tmp_path, capsys):
    config = write_config(tmp_path, shipper={"max_record_bytes": 100})
    path = pod_log(tmp_path, "shop", "web-1", "nginx")
    # longer than a read (1 MiB): the tail keeps its head and skips the rest
    path.write_text(cri("2026-11-20T23:00:00Z", "a" * 1_500_000) + cri("2026-11-20T23:00:01Z", "short"))
    assert shipper(["--config", str(config), "--once"]) == 0
    assert aggregator(["--config", str(config), "--once"]) == 0
    capsys.readouterr()
    rc, out = verify(capsys, config)
    assert rc == 0 and "0 gaps (0 bytes never stored), 1 truncated lines" in out and "truncated: node-a:" in out


def test_report_says_what_is_kept_deleted_held_and_verified(tmp_path, capsys):
    from tests.conftest import fill_lake
    config = write_config(tmp_path, retention={"default_days": 3650, "rules": [
        {"name": "pay-errors", "namespace": "pay", "level": "error", "days": 1, "erasure": True}]})
    n = fill_lake(tmp_path, config, rounds=1, lines=14)
    # a hold on later data: active, but it covers none of these files
    assert aggregator(["--config", str(config), "hold", "add", "-n", "shop", "--since", "2026-12-01", "--reason",
                       "case 9"]) == 0
    assert aggregator(["--config", str(config), "retention"]) == 0
    assert aggregator(["--config", str(config), "keys", "rotate", "--new-key-file", str(tmp_path / "m2.key")]) == 0
    config.write_text(config.read_text().replace("[aggregator]\n", f'[aggregator]\nkey_file = "{tmp_path / "m2.key"}"\n'))
    out = tmp_path / "report.md"
    assert aggregator(["--config", str(config), "report", "--since", "1d", "--out", str(out)]) == 0
    md, doc = out.read_text(), json.loads(out.with_suffix(".json").read_text())
    deleted = 2 * 2  # pay errors: i = 0 and 7 in each of the two nodes' pay containers
    assert doc["kept"]["records"] == n - deleted
    assert doc["kept"]["records_by_namespace_and_tier"] == {"pay": {"hot": n // 2 - deleted}, "shop": {"hot": n // 2}}
    assert doc["kept"]["oldest"] == "2026-11-20T23:00:00Z"
    (action,) = doc["actions"]["retention"]
    assert action["rows_deleted"] == deleted and action["keys_destroyed"]
    assert doc["holds"]["active"][0].startswith("hold 1: namespace=shop time=[2026-12-01T00:00:00.000000000Z, -) — 'case 9'")
    assert [k["event"] for k in doc["key_events"]] == ["master key rotated"]
    assert doc["verify"]["ok"] and doc["verify"]["gaps"] == []
    for text in ("## Data kept", f"| pay | {n // 2 - deleted:,} | 0 | 0 |", "**pay-errors**: namespace=pay, level=error "
                 "kept 1 days (erasure rule)", f"retention by ", f"{deleted} records deleted", "case 9",
                 "master key rotated", "**PASSED**"):
        assert text in md, text
    assert query.connect(str(config)).execute("SELECT count(*) FROM logs").fetchone()[0] == n - deleted
