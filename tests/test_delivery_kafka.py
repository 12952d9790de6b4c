"""Delivery to the real TLS broker: per-container order, and a broker outage mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aggregator.cli.run import main as aggregator
from lake.catalog.sqlite import SqliteCatalog as Catalog
from shipper.cli import main as shipper
from tests.conftest import cri, pod_log, write_config

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parent.parent
OUTAGE_S = float(os.environ.get("LOGLAKE_TEST_OUTAGE_S", "60"))


def kafka_sh(action: str, broker) -> None:
    env = dict(os.environ, LOGLAKE_CERTS=str(broker.certs), PYTHON=sys.executable)
    subprocess.run([str(ROOT / "deploy" / "kafka" / "kafka.sh"), action], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def test_one_containers_lines_stay_in_one_partition_in_order(tmp_path, broker):
    config = write_config(tmp_path, broker=broker, shipper={"batch_max_bytes": 4096},
                          aggregator={"flush_max_records": 100})
    assert aggregator(["--config", str(config), "topics", "create"]) == 0
    for j in range(4):
        pod_log(tmp_path, "shop", f"web-{j}", "nginx").write_text(
            "".join(cri(f"2026-11-24T10:00:00.{i:09d}Z", f"c{j} line {i} " + "x" * 80) for i in range(300)))
    assert shipper(["--config", str(config), "--once"]) == 0
    assert aggregator(["--config", str(config), "--once"]) == 0
    import query
    con = query.connect(str(config))
    assert con.execute("SELECT pod, count(*) FROM logs GROUP BY pod ORDER BY pod").fetchall() == \
        [(f"web-{j}", 300) for j in range(4)]
    entries = sorted(Catalog(tmp_path / "lake" / "catalog.sqlite").files(), key=lambda e: e.first_offset)
    for j in range(4):
        pod = f"web-{j}"
        mine = [e for e in entries if any(c.split("/")[1] == pod for c in e.containers)]
        assert len({e.partition for e in mine}) == 1          # one container, one partition
        assert len(mine) > 1
        previous_max = -1
        for e in mine:                                         # in Kafka offset order...
            lo, hi = con.execute(
                f"SELECT min(source_offset), max(source_offset) FROM read_parquet('{tmp_path / 'lake' / e.path}', "
                f"encryption_config={{footer_key: '{e.key_id}'}}) WHERE pod = '{pod}'").fetchone()
            assert lo > previous_max                           # ...the file's lines come in file order
            previous_max = hi


def write_lines(path: Path, stop: threading.Event, written: list[int]) -> None:
    i = 0
    while not stop.is_set():
        with path.open("a") as f:
            f.write(cri("2026-11-24T10:00:00Z", f"line {i}"))
        written.append(i)
        i += 1
        time.sleep(0.01)


def test_broker_outage_mid_stream_loses_nothing(tmp_path, broker):
    config = write_config(tmp_path, broker=broker,
                          shipper={"poll_interval_ms": 50, "ack_timeout_ms": 3000, "shutdown_grace_ms": 20000},
                          kafka={"request_timeout_ms": 3000})
    assert aggregator(["--config", str(config), "topics", "create"]) == 0
    log = pod_log(tmp_path, "shop", "web-1", "nginx")
    log.write_text(cri("2026-11-24T10:00:00Z", "start"))
    stderr = (tmp_path / "shipper.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "shipper.cli", "--config", str(config), "--log-level", "INFO"],
                            stdout=subprocess.DEVNULL, stderr=stderr)
    stop, written = threading.Event(), []
    writer = threading.Thread(target=write_lines, args=(log, stop, written))
    writer.start()
    try:
        time.sleep(3)
        kafka_sh("down", broker)
        time.sleep(OUTAGE_S)
        assert proc.poll() is None, "the shipper must keep running while the broker is down"
        buffered = list((tmp_path / "shipper" / "buffer").glob("*.buf"))
        assert buffered, "batches must wait in the disk buffer during the outage"
        kafka_sh("up", broker)
        time.sleep(3)
    finally:
        stop.set()
        writer.join()
        if proc.poll() is None and not _broker_up(broker):
            kafka_sh("up", broker)
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    logs = (tmp_path / "shipper.log").read_text()
    assert "buffering batches on disk" in logs and "disk buffer drained" in logs
    assert not list((tmp_path / "shipper" / "buffer").glob("*.buf"))
    assert aggregator(["--config", str(config), "--once"]) == 0
    import query
    bodies = {b for (b,) in query.connect(str(config)).execute("SELECT DISTINCT body FROM logs").fetchall()}
    assert bodies == {"start"} | {f"line {i}" for i in written}


def _broker_up(broker) -> bool:
    import asyncio

    from aggregator.source.kafka import ping
    from runtime.transport import KafkaSettings
    try:
        asyncio.run(ping(KafkaSettings(bootstrap_servers=broker.bootstrap, ca_file=broker.certs / "ca.crt",
                                       request_timeout_ms=3000),
                         broker.certs / "aggregator.crt", broker.certs / "aggregator.key"))
        return True
    except Exception:
        return False
