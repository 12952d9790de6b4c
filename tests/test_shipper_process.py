"""The shipper as a process: kill -9 at any moment, SIGTERM, /metrics and /healthz."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import orjson

from aggregator.cli.run import main as aggregator
from shipper.cli import main as shipper
from tests.conftest import cri, free_port, pod_log, wait_for_metrics, write_config


def start(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "shipper.cli", "--config", str(config), "--log-level", "WARNING"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def write_lines(paths: list[Path], n: int, pause: float) -> None:
    for i in range(n):
        for j, p in enumerate(paths):
            with p.open("a") as f:
                f.write(cri(f"2026-11-24T10:00:00.{i:09d}Z", f"file {j} line {i}"))
        time.sleep(pause)


def test_kill_9_at_any_moment_loses_nothing(tmp_path):
    config = write_config(tmp_path, shipper={"poll_interval_ms": 20, "batch_max_wait_ms": 10})
    paths = [pod_log(tmp_path, "shop", f"web-{j}", "nginx") for j in range(3)]
    for p in paths:
        p.write_text(cri("2026-11-24T09:59:59Z", "first"))
    writer = threading.Thread(target=write_lines, args=(paths, 1500, 0.002))
    writer.start()
    rng = random.Random(7)
    kills = 0
    while writer.is_alive() or kills < 4:
        proc = start(config)
        time.sleep(rng.uniform(0.15, 0.6))
        proc.kill()
        proc.wait()
        kills += 1
    writer.join()
    assert shipper(["--config", str(config), "--once"]) == 0
    assert aggregator(["--config", str(config), "--once"]) == 0
    import query
    con = query.connect(str(config))
    expected = {"first"} | {f"file {j} line {i}" for j in range(3) for i in range(1500)}
    stored = con.execute("SELECT body, count(*) FROM logs GROUP BY body").fetchall()
    assert {b for b, _ in stored} == expected                 # nothing lost
    # "first" is in three files; everything else once: the aggregator dropped every resend by its id
    assert sorted(n for _, n in stored) == [1] * (len(expected) - 1) + [3]
    assert con.execute("SELECT count(*) = count(DISTINCT record_id) FROM logs").fetchone() == (True,)
    assert kills >= 4


def test_sigterm_flushes_acks_and_saves_checkpoint(tmp_path):
    config = write_config(tmp_path, shipper={"poll_interval_ms": 50, "shutdown_grace_ms": 3000,
                                             "batch_max_wait_ms": 10_000, "batch_max_bytes": 10_000_000})
    log = pod_log(tmp_path, "shop", "web-1", "nginx")
    log.write_text("".join(cri("2026-11-24T10:00:00Z", f"line {i}") for i in range(500)))
    proc = start(config)
    time.sleep(1.0)  # read, but the batch is held back by its 10 s age limit
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 3.0
    checkpoint = orjson.loads((tmp_path / "shipper" / "checkpoints.json").read_bytes())
    assert [s["offset"] for s in checkpoint["sources"].values()] == [log.stat().st_size]
    assert aggregator(["--config", str(config), "--once"]) == 0
    import query
    assert query.connect(str(config)).execute("SELECT count(*) FROM logs").fetchone() == (500,)


def test_metrics_and_healthz_over_http(tmp_path):
    port = free_port()
    config = write_config(tmp_path, shipper={"metrics_address": f"127.0.0.1:{port}", "poll_interval_ms": 50})
    log = pod_log(tmp_path, "shop", "web-1", "nginx")
    log.write_text(cri("2026-11-24T10:00:00Z", "hello jane@example.com") + cri("2026-11-24T10:00:01Z", "bye"))
    proc = start(config)
    try:
        body = wait_for_metrics(port, "loglake_shipper_shipped_records_total 2.0\n", "metrics never showed the shipped records")
        assert "# TYPE loglake_shipper_read_lines_total counter" in body
        assert 'loglake_shipper_redactions_total{rule="email"} 1.0\n' in body
        assert "loglake_shipper_buffer_bytes 0.0\n" in body
        assert f'loglake_shipper_file_lag_bytes{{path="{log}"}} 0.0\n' in body
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
        assert (health.status, health.read()) == (200, b"ok\n")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    # its own logs are JSON lines on stderr
    for line in proc.stderr.read().decode().splitlines():
        assert orjson.loads(line)["logger"].startswith("loglake")
