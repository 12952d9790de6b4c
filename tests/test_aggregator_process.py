"""The aggregator as a process: SIGTERM drains and commits, /metrics, a full disk stops it cleanly."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
import urllib.request

from aggregator.catalog_sqlite import SqliteCatalog as Catalog
from aggregator.cli import main as aggregator
from shipper.cli import main as shipper
from tests.conftest import (cri, free_port, pod_log, stored_rows, wait_for_metrics, write_config,
                            write_sample_logs)


def start(config, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aggregator.cli", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen)


def test_sigterm_drains_and_metrics_are_served(tmp_path):
    expected = write_sample_logs(tmp_path)
    port = free_port()
    # a long flush interval: only the SIGTERM drain can write the file
    config = write_config(tmp_path, aggregator={"flush_interval_ms": 600_000, "metrics_address": f"127.0.0.1:{port}"})
    assert shipper(["--config", str(config), "--once"]) == 0
    proc = start(config)
    try:
        body = wait_for_metrics(port, "loglake_aggregator_buffered_records 5", "the aggregator never buffered the records")
        assert "loglake_aggregator_files_written_total 0" in body
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read() == b"ok\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert stored_rows(config) == expected


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))


def test_full_disk_stops_with_one_sentence_and_no_partial_file(tmp_path):
    """A file-size limit stands in for a full disk: the Parquet write fails with EFBIG."""
    config = write_config(tmp_path)
    log = pod_log(tmp_path, "shop", "web-1", "nginx")
    log.write_text("".join(cri("2026-11-24T10:00:00Z", os.urandom(300).hex()) for _ in range(3000)))
    assert shipper(["--config", str(config), "--once"]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "aggregator.cli", "--config", str(config), "--once"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_limit_file_size)
    assert proc.wait(timeout=60) == 1
    err = proc.stderr.read().decode().strip().splitlines()
    assert err[-1].startswith("loglake-aggregator: cannot write ") and "free space" in err[-1]
    catalog = Catalog(tmp_path / "lake" / "catalog.sqlite")
    assert catalog.files() == [] and catalog.positions("spool") == {}
    assert not [p for p in (tmp_path / "lake").rglob("*") if p.is_file() and "hot" in p.parts]
    catalog.close()
    # with room again, everything is stored, once
    assert aggregator(["--config", str(config), "--once"]) == 0
    rows = stored_rows(config)
    assert len(rows) == 3000 and len({r[1] for r in rows}) == 3000


def test_kill_9_at_any_moment_neither_loses_nor_duplicates(tmp_path):
    import random

    from aggregator.writer import sha256_file
    config = write_config(tmp_path, shipper={"batch_max_bytes": 2048},
                          aggregator={"flush_max_records": 40, "flush_interval_ms": 50})
    for j in range(3):
        pod_log(tmp_path, "shop", f"web-{j}", "nginx").write_text(
            "".join(cri(f"2026-11-24T10:00:00.{i:09d}Z", f"w{j} line {i}") for i in range(2000)))
    assert shipper(["--config", str(config), "--once"]) == 0
    rng = random.Random(3)
    progress = []
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-m", "aggregator.cli", "--config", str(config), "--once",
                                 "--log-level", "WARNING"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.4, 1.2))
        proc.kill()
        proc.wait()
        # after every kill, the catalog and the files agree (the next start removes unlisted leftovers)
        catalog = Catalog(tmp_path / "lake" / "catalog.sqlite")
        for e in catalog.files():
            assert sha256_file(tmp_path / "lake" / e.path) == e.sha256
        progress.append(sum(e.rows for e in catalog.files()))
        catalog.close()
    assert any(0 < rows < 6000 for rows in progress), f"no kill landed mid-consumption: {progress}"
    assert aggregator(["--config", str(config), "--once"]) == 0
    listed = {e.path for e in Catalog(tmp_path / "lake" / "catalog.sqlite").files()}
    on_disk = {str(p.relative_to(tmp_path / "lake")) for p in (tmp_path / "lake" / "hot").rglob("*") if p.is_file()}
    assert on_disk == listed
    import query
    con = query.connect(str(config))
    assert con.execute("SELECT count(*), count(DISTINCT record_id) FROM logs").fetchone() == (6000, 6000)
