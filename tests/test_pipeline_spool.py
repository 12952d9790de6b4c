"""The whole path on the embedded spool transport: files → shipper → spool →
aggregator → encrypted Parquet → query."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from aggregator.cli.run import main as aggregator
from query.cli import main as query_cli
from shipper.cli import main as shipper
from tests.conftest import TRACE, cri, pod_log, stored_rows, write_config, write_sample_logs


def ship_and_store(config: Path) -> None:
    assert shipper(["--config", str(config), "--once"]) == 0
    assert aggregator(["--config", str(config), "--once"]) == 0


def test_records_arrive_exactly(tmp_path):
    expected = write_sample_logs(tmp_path)
    config = write_config(tmp_path)
    ship_and_store(config)
    assert stored_rows(config) == expected


def test_enrichment_and_ids(tmp_path):
    write_sample_logs(tmp_path)
    config = write_config(tmp_path)
    ship_and_store(config)
    import query
    con = query.connect(str(config))
    rows = con.execute("SELECT DISTINCT node, namespace, pod, pod_uid, container FROM logs ORDER BY pod").fetchall()
    assert rows == [("node-a", "shop", "checkout-5d8f7-abcde", "0f1e2d3c-0000-4000-8000-000000000001", "app"),
                    ("node-a", "shop", "frontend-7c9b4-fghij", "0f1e2d3c-0000-4000-8000-000000000001", "nginx")]
    ids = con.execute("SELECT count(DISTINCT record_id), count(*) FROM logs").fetchone()
    assert ids == (5, 5)
    attrs = con.execute("SELECT attributes->>'order' FROM logs WHERE body = 'order placed'").fetchone()
    assert attrs == ("7",)


def test_checkpoint_ships_only_new_lines(tmp_path):
    write_sample_logs(tmp_path)
    config = write_config(tmp_path)
    ship_and_store(config)
    ship_and_store(config)  # nothing new: nothing shipped twice
    assert len(stored_rows(config)) == 5
    log = pod_log(tmp_path, "shop", "frontend-7c9b4-fghij", "nginx")
    with log.open("a") as f:
        f.write(cri("2026-11-24T10:00:02.000000000Z", "ERROR upstream reset"))
    ship_and_store(config)
    rows = stored_rows(config)
    assert len(rows) == 6
    assert rows[-1][-1] == "ERROR upstream reset" and rows[-1][4] == 17


def test_parquet_holds_no_clear_text(tmp_path):
    write_sample_logs(tmp_path)
    config = write_config(tmp_path)
    ship_and_store(config)
    files = list((tmp_path / "lake" / "hot").rglob("*.parquet"))
    assert files
    for f in files:
        data = f.read_bytes()
        for needle in (b"order placed", b"payment declined", TRACE.encode(), b"checkout-5d8f7", b"slow upstream"):
            assert needle not in data, f"{needle!r} readable in {f}"


def test_reading_without_the_key_fails_clearly(tmp_path, capsys):
    write_sample_logs(tmp_path)
    config = write_config(tmp_path)
    ship_and_store(config)
    f = next((tmp_path / "lake" / "hot").rglob("*.parquet"))
    with pytest.raises(duckdb.Error, match="encrypted"):
        duckdb.connect().execute(f"SELECT * FROM read_parquet('{f}')").fetchall()

    key = tmp_path / "lake" / "keys" / "master.key"
    shutil.move(key, tmp_path / "key.bak")
    assert query_cli(["--config", str(config), "sql", "SELECT count(*) FROM logs"]) == 1
    err = capsys.readouterr().err
    assert "encryption key file" in err and "does not exist" in err and "Traceback" not in err


def test_wrong_key_fails_clearly(tmp_path, capsys):
    write_sample_logs(tmp_path)
    config = write_config(tmp_path)
    ship_and_store(config)
    from lake import keys
    keys.new_master_file(tmp_path / "other.key")
    shutil.copy(tmp_path / "other.key", tmp_path / "lake" / "keys" / "master.key")
    capsys.readouterr()
    assert query_cli(["--config", str(config), "sql", "SELECT count(*) FROM logs"]) == 1
    err = capsys.readouterr().err
    assert "does not open data key dk_hot_20261124_" in err and "not the master key" in err
    assert len(err.splitlines()) == 1


def test_key_file_is_owner_only(tmp_path):
    write_sample_logs(tmp_path)
    config = write_config(tmp_path)
    ship_and_store(config)
    key = tmp_path / "lake" / "keys" / "master.key"
    assert key.stat().st_mode & 0o777 == 0o600


def test_corrupt_batch_is_quarantined_and_good_ones_stored(tmp_path):
    expected = write_sample_logs(tmp_path)
    config = write_config(tmp_path)
    assert shipper(["--config", str(config), "--once"]) == 0
    node_dir = tmp_path / "spool" / "node-a"
    segments = sorted(node_dir.glob("*.batch"))
    bad = node_dir / f"{int(segments[-1].name[:20]) + 1:020d}.batch"
    bad.write_bytes(b"LLKB\x01garbage")
    assert aggregator(["--config", str(config), "--once"]) == 0
    assert stored_rows(config) == expected
    quarantined = list((tmp_path / "lake" / "quarantine").rglob("*.batch"))
    assert [q.name for q in quarantined] == [f"{int(bad.name[:20]):020d}.truncated.batch"]
    assert quarantined[0].read_bytes() == b"LLKB\x01garbage"


def test_query_formats(tmp_path, capsys):
    write_sample_logs(tmp_path)
    config = write_config(tmp_path)
    ship_and_store(config)
    capsys.readouterr()
    sql = "SELECT container, count(*) AS n FROM logs GROUP BY 1 ORDER BY 1"
    assert query_cli(["--config", str(config), "--format", "csv", "sql", sql]) == 0
    assert capsys.readouterr().out == "container,n\napp,3\nnginx,2\n"
    assert query_cli(["--config", str(config), "--format", "json", "sql", sql]) == 0
    assert capsys.readouterr().out == '{"container":"app","n":3}\n{"container":"nginx","n":2}\n'
    assert query_cli(["--config", str(config), "sql", sql]) == 0
    assert capsys.readouterr().out.splitlines() == ["container  n", "---------  -", "app        3",
                                                    "nginx      2", "(2 rows)"]


def test_bad_sql_is_one_sentence(tmp_path, capsys):
    write_sample_logs(tmp_path)
    config = write_config(tmp_path)
    ship_and_store(config)
    capsys.readouterr()
    assert query_cli(["--config", str(config), "sql", "SELEC nope FROM logs"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("loglake-query: query failed: Parser Error: syntax error") and len(err.splitlines()) == 1
