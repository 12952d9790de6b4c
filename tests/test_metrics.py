"""/metrics, /healthz and /readyz of the real shipper and aggregator processes, scraped over HTTP.

Values are read with prometheus_client's parser and compared exactly (the old hand-written exposition
rounded to 6 significant digits: 5.3191e+06 bytes, a timestamp up to 5,000 s off). Unwritable paths are
made read-only with a read-only bind mount when the tests run as root (root ignores permission bits),
with chmod otherwise.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aggregator import config as agg_config
from aggregator.cli.run import main as aggregator
from aggregator.consume import HOT, hot_file_name
from aggregator.metrics import QUARANTINE_REASONS, WIRE_REASONS
from lake.storage import Storage
from runtime.config import version
from runtime.durable import make_private_dirs
from schemas.spool import list_segments
from shipper.cli import main as shipper
from shipper.metrics import AGENT_ERROR_KINDS, ERROR_KINDS, NATIVE_ERROR_KINDS
from tests.conftest import cri, free_port, pod_log, write_config

ROOT = Path(__file__).resolve().parent.parent
TS = "2026-11-24T10:00:00.000000001Z"
DEFAULT_RULES = ["aws_access_key", "bearer_token", "card_number", "email", "url_password"]


# helpers ---------------------------------------------------------------------------------------------

def get(port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics: (sample name, sorted labels) -> value."""
    status, _, body = get(port, "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def labelled(samples: dict, name: str, label: str) -> dict[str, float]:
    return {dict(lab)[label]: v for (n, lab), v in samples.items() if n == name}


def wait_until(check: Callable[[], object], what: str, timeout: float = 20) -> object:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = check()
            if got:
                return got
        except (OSError, KeyError):  # not serving yet, or the series not there yet
            pass
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def healthy(port: int, path: str) -> tuple[int, str]:
    status, _, body = get(port, path)
    return status, body.decode()


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` (a file or a directory) unwritable for this user, root included, then restore it."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(mode & ~0o222)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode:
        pytest.skip("running as root without the right to mount: cannot make a path read-only for root")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True, capture_output=True)


def start(component: str, config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"{component}.cli", "--config", str(config),
                             "--log-level", "WARNING"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen) -> bytes:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"Traceback" not in err
    return err


def write_big_log(tmp: Path, lines: int) -> Path:
    """A CRI file of more than 1e6 bytes, so a value rounded to 6 significant digits would show."""
    log = pod_log(tmp, "shop", "web-1", "nginx")
    log.write_text("".join(cri(TS, f"GET /api/items/{i} 200 user={i * 7919 % 100003}") for i in range(lines)))
    assert log.stat().st_size > 1_000_000 and log.stat().st_size % 10  # not a round number either
    return log


# the shipper -----------------------------------------------------------------------------------------

def test_shipper_metrics_are_exact_complete_and_from_its_own_registry(tmp_path):
    port = free_port()
    config = write_config(tmp_path, shipper={"metrics_address": f"127.0.0.1:{port}", "poll_interval_ms": 50,
                                             "batch_max_bytes": 64 * 1024, "redact_patterns": ["secret-[0-9]+"]})
    n = 20_000
    log = write_big_log(tmp_path, n)
    proc = start("shipper", config)
    try:
        m = wait_until(lambda: (s := scrape(port)) and value(s, "loglake_shipper_shipped_records_total") == n and s,
                       "the shipper never shipped every line")
        assert value(m, "loglake_shipper_read_bytes_total") == log.stat().st_size    # exact, > 1e6
        assert value(m, "loglake_shipper_read_lines_total") == n
        acked = value(m, "loglake_shipper_acked_batches_total")
        assert acked > 10                                                           # 64 KiB batches
        # one ack-latency observation per batch acknowledged; buckets cumulative up to +Inf
        assert value(m, "loglake_shipper_ack_latency_seconds_count") == acked
        buckets = sorted((float(dict(lab)["le"]), v) for (name, lab), v in m.items()
                         if name == "loglake_shipper_ack_latency_seconds_bucket")
        assert buckets[-1] == (float("inf"), acked)
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)
        assert 0 < value(m, "loglake_shipper_ack_latency_seconds_sum") < acked * 15
        # every known label value is there from the start, at 0
        assert labelled(m, "loglake_shipper_errors_total", "kind") == dict.fromkeys(ERROR_KINDS, 0)
        assert labelled(m, "loglake_shipper_redactions_total", "rule") == dict.fromkeys([*DEFAULT_RULES, "custom_0"], 0)
        assert value(m, "loglake_shipper_file_lag_bytes", path=str(log)) == 0
        assert value(m, "loglake_shipper_open_files") == 1 and value(m, "loglake_shipper_waiting_files") == 0
        assert value(m, "loglake_shipper_open_files_limit") > 100                    # derived from RLIMIT_NOFILE
        assert value(m, "loglake_build_info", component="shipper", version=version()) == 1
        assert time.time() - 60 < value(m, "loglake_shipper_start_time_seconds") <= time.time()
        assert value(m, "process_resident_memory_bytes") > 0
        assert ("process_cpu_seconds_total", ()) in m
        assert not any(name.startswith("python_gc") for name, _ in m)               # not the global registry
        assert healthy(port, "/healthz") == (200, "ok\n")
        assert healthy(port, "/readyz") == (200, "ok\n")
    finally:
        stop(proc)


def test_http_endpoints_negotiate_openmetrics_and_refuse_what_they_do_not_serve(tmp_path):
    port = free_port()
    config = write_config(tmp_path, shipper={"metrics_address": f"127.0.0.1:{port}", "poll_interval_ms": 50})
    pod_log(tmp_path, "shop", "web-1", "nginx").write_text(cri(TS, 'say "hi"'))
    proc = start("shipper", config)
    try:
        wait_until(lambda: healthy(port, "/readyz")[0] == 200, "the shipper never became ready")
        status, headers, body = get(port, "/metrics")
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "# TYPE loglake_shipper_read_bytes_total counter" in body.decode()
        status, headers, body = get(port, "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
        text = body.decode()
        assert text.endswith("# EOF\n") and "# TYPE loglake_shipper_read_bytes counter" in text
        assert "# TYPE loglake_build info" in text
        status, headers, body = get(port, "/metrics", method="HEAD")
        assert status == 200 and body == b"" and int(headers["Content-Length"]) > 1000
        assert get(port, "/metrics?name[]=x")[0] == 200
        assert get(port, "/nope")[0] == 404 and get(port, "/")[0] == 404
        status, headers, _ = get(port, "/healthz", method="POST")
        assert status == 405 and headers["Allow"] == "GET, HEAD"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"garbage\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 400 ")
        assert proc.poll() is None
    finally:
        stop(proc)


def test_slow_clients_cannot_take_the_descriptors_or_the_answers(tmp_path):
    """Connections that send nothing hold a descriptor each: past a scraper's and a prober's few they are
    dropped at once, the probes still answer, and the process's descriptors stay bounded."""
    import socket
    port = free_port()
    config = write_config(tmp_path, shipper={"metrics_address": f"127.0.0.1:{port}", "poll_interval_ms": 50})
    pod_log(tmp_path, "shop", "web-1", "nginx").write_text(cri(TS, "hello"))
    proc = start("shipper", config)
    slow: list[socket.socket] = []
    try:
        wait_until(lambda: healthy(port, "/readyz")[0] == 200, "the shipper never became ready")
        before = len(os.listdir(f"/proc/{proc.pid}/fd"))
        for _ in range(200):
            slow.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(0.5)
        held = len(os.listdir(f"/proc/{proc.pid}/fd"))
        assert held <= before + 20, (before, held)            # 16 at most, not 200
        assert healthy(port, "/healthz") == (200, "ok\n")     # a prober still gets through at once
    finally:
        for sock in slow:
            sock.close()
        stop(proc)


def test_shipper_stays_live_but_not_ready_while_the_transport_is_unavailable(tmp_path):
    """A spool that cannot be written is an outage like a broker's: batches go to the disk buffer,
    /readyz says so (503), /healthz stays 200 (a restart would not help), and everything arrives after."""
    port = free_port()
    config = write_config(tmp_path, shipper={"metrics_address": f"127.0.0.1:{port}", "poll_interval_ms": 50})
    log = pod_log(tmp_path, "shop", "web-1", "nginx")
    log.write_text(cri(TS, "before the outage"))
    proc = start("shipper", config)
    try:
        wait_until(lambda: value(scrape(port), "loglake_shipper_shipped_records_total") == 1, "nothing shipped")
        assert healthy(port, "/readyz") == (200, "ok\n")
        with read_only(tmp_path / "spool" / "node-a"):
            with log.open("a") as f:
                f.write("".join(cri(TS, f"during the outage {i}") for i in range(50)))
            status, why = wait_until(lambda: (r := healthy(port, "/readyz"))[0] == 503 and r,
                                     "/readyz never reported the outage")
            assert why.startswith("transport unavailable: ") and "disk buffer" in why and why.count("\n") == 1
            for _ in range(20):                                    # 2 s of outage: still alive throughout
                assert healthy(port, "/healthz") == (200, "ok\n")
                time.sleep(0.1)
            m = scrape(port)
            assert value(m, "loglake_shipper_send_failures_total") >= 1
            assert value(m, "loglake_shipper_buffered_batches_total") >= 1
            assert value(m, "loglake_shipper_buffer_bytes") > 0
            assert value(m, "loglake_shipper_shipped_records_total") == 1
        wait_until(lambda: value(scrape(port), "loglake_shipper_shipped_records_total") == 51,
                   "the buffered lines never went out after the outage", 30)
        wait_until(lambda: healthy(port, "/readyz") == (200, "ok\n"), "/readyz never recovered")
        assert value(scrape(port), "loglake_shipper_buffer_bytes") == 0
    finally:
        stop(proc)


def test_shipper_liveness_fails_only_when_its_loop_stops_turning(tmp_path):
    """Wedging the loop for real would take a minute; the checks read the agent's own state."""
    import asyncio

    from shipper import config as shipper_config
    from shipper.agent import Agent
    from shipper.metrics import healthz, readyz, wedged_after_s
    from shipper.transport import create

    settings = shipper_config.load(str(write_config(tmp_path)))

    async def go() -> list[tuple[bool, str]]:
        agent = Agent(settings, create(settings.transport, settings.shipper))
        out = [await readyz(agent), await healthz(agent)]        # before the loop's first turn
        await agent.delivery.send([])
        out += [await readyz(agent), await healthz(agent)]
        agent.delivery.ticked_at -= wedged_after_s(settings.shipper) + 1
        out.append(await healthz(agent))
        return out
    before_ready, before_live, ready, live, wedged = asyncio.run(go())
    assert before_ready == (False, "starting") and before_live == (True, "ok")
    assert ready == (True, "ok") and live == (True, "ok")
    assert wedged[0] is False and wedged[1].startswith("agent loop wedged: no turn for ")


# the aggregator ----------------------------------------------------------------------------------------

def test_aggregator_metrics_are_exact_with_every_reason_at_zero(tmp_path):
    port = free_port()
    config = write_config(tmp_path, aggregator={"metrics_address": f"127.0.0.1:{port}"})
    n = 20_000
    write_big_log(tmp_path, n)
    assert shipper(["--config", str(config), "--once", "--log-level", "WARNING"]) == 0
    segments = len(list_segments(tmp_path / "spool" / "node-a"))
    t0 = time.time()
    proc = start("aggregator", config)
    try:
        m = wait_until(lambda: (s := scrape(port)) and value(s, "loglake_aggregator_stored_records_total") == n
                       and not any(labelled(s, "loglake_aggregator_consumer_lag_batches", "partition").values()) and s,
                       "the aggregator never stored every record")
        assert value(m, "loglake_aggregator_consumed_batches_total") == segments
        assert value(m, "loglake_aggregator_written_files_total") >= 1
        assert value(m, "loglake_aggregator_dropped_duplicate_records_total") == 0
        assert labelled(m, "loglake_aggregator_consumer_lag_batches", "partition") == {"node-a": 0}
        assert labelled(m, "loglake_aggregator_quarantined_batches_total", "reason") == \
            dict.fromkeys(QUARANTINE_REASONS, 0)
        assert labelled(m, "loglake_aggregator_background_runs_total", "job") == {"compaction": 0, "retention": 0}
        # the commit time, exactly: not up to 5,000 s in the future as 6 significant digits made it
        assert t0 <= value(m, "loglake_aggregator_last_flush_timestamp_seconds") <= time.time()
        assert value(m, "loglake_build_info", component="aggregator", version=version()) == 1
        assert value(m, "process_resident_memory_bytes") > 0
        assert ("loglake_aggregator_batches_quarantined_total", ()) not in m     # a sum of the labelled series
        assert healthy(port, "/healthz") == (200, "ok\n")
        assert healthy(port, "/readyz") == (200, "ok\n")
    finally:
        stop(proc)


def test_aggregator_health_fails_while_the_catalog_or_a_storage_tier_is_unwritable(tmp_path):
    port = free_port()
    cold = tmp_path / "cold"
    make_private_dirs(cold)
    config = write_config(tmp_path, aggregator={"metrics_address": f"127.0.0.1:{port}"}, tiers={"cold_dir": str(cold)})
    pod_log(tmp_path, "shop", "web-1", "nginx").write_text(cri(TS, "one line"))
    assert shipper(["--config", str(config), "--once", "--log-level", "WARNING"]) == 0
    proc = start("aggregator", config)
    try:
        wait_until(lambda: healthy(port, "/readyz") == (200, "ok\n"), "the aggregator never became ready")
        assert healthy(port, "/healthz") == (200, "ok\n")
        for path, reason in ((tmp_path / "lake" / "catalog.sqlite", "catalog not writable: "),
                             (cold, "storage tier cold not writable: ")):
            with read_only(path):
                for check in ("/healthz", "/readyz"):
                    status, why = healthy(port, check)
                    assert status == 503 and why.startswith(reason) and str(path) in why, (check, why)
                    assert why.count("\n") == 1
            assert healthy(port, "/healthz") == (200, "ok\n")      # writable again: healthy again
    finally:
        stop(proc)


def test_aggregator_health_fails_when_consumption_stalls(tmp_path):
    """A storage write that hangs (NFS, a stuck upload): the first hot file's staging name is a FIFO, so
    the write blocks with the batch consumed and not committed. The loop goes on serving HTTP."""
    port = free_port()
    config = write_config(tmp_path, aggregator={"metrics_address": f"127.0.0.1:{port}", "stall_after_s": 2})
    pod_log(tmp_path, "shop", "web-1", "nginx").write_text(cri(TS, "stuck line"))
    assert shipper(["--config", str(config), "--once", "--log-level", "WARNING"]) == 0
    # the batch, and the report of the file's length sent at exit: consumed in one poll, flushed as one file
    segments = list_segments(tmp_path / "spool" / "node-a")
    (first, segment), (last, _) = segments[0], segments[-1]
    settings = agg_config.load(str(config))
    make_private_dirs(settings.aggregator.data_dir)
    rel = hot_file_name("spool", "node-a", first, last, segment.read_bytes()[16:20].hex())
    os.mkfifo(Storage(settings.aggregator, settings.tiers).target(HOT, rel).staging)
    proc = start("aggregator", config)
    try:
        status, why = wait_until(lambda: (r := healthy(port, "/healthz"))[0] == 503 and r,
                                 "/healthz never reported the stall")
        assert re.fullmatch(r"consumption stalled: nothing committed for \d+ s with batches waiting \(node-a: \d+\)\n",
                            why), why
        assert healthy(port, "/readyz")[0] == 503
        m = scrape(port)
        assert labelled(m, "loglake_aggregator_consumer_lag_batches", "partition") == {"node-a": len(segments)}
        assert value(m, "loglake_aggregator_consumed_batches_total") == len(segments)
        assert value(m, "loglake_aggregator_last_flush_timestamp_seconds") == 0
    finally:
        proc.kill()  # its writer thread is blocked opening the FIFO for good
        proc.wait()


@pytest.mark.kafka
def test_kafka_consumer_lag_per_partition_goes_to_zero(tmp_path, broker):
    port = free_port()
    config = write_config(tmp_path, broker=broker, aggregator={"metrics_address": f"127.0.0.1:{port}",
                                                               "flush_interval_ms": 3000})
    assert aggregator(["--config", str(config), "topics", "create"]) == 0
    proc = start("aggregator", config)
    try:
        wait_until(lambda: healthy(port, "/readyz") == (200, "ok\n"), "the aggregator never fetched from Kafka", 60)
        m = scrape(port)
        assert labelled(m, "loglake_aggregator_consumer_lag_batches", "partition") == {"0": 0, "1": 0}
        for j in range(6):
            pod_log(tmp_path, "shop", f"web-{j}", "nginx").write_text(
                "".join(cri(TS, f"c{j} line {i}") for i in range(100)))
        assert shipper(["--config", str(config), "--once", "--log-level", "WARNING"]) == 0
        highest = {"0": 0.0, "1": 0.0}

        def drained() -> bool:
            s = scrape(port)
            lag = labelled(s, "loglake_aggregator_consumer_lag_batches", "partition")
            for p, v in lag.items():
                highest[p] = max(highest[p], v)
            return value(s, "loglake_aggregator_stored_records_total") == 600 and lag == {"0": 0, "1": 0}
        wait_until(drained, "the lag never went back to 0", 60)
        # batches waited (consumed, not committed) during the 3 s flush interval: the lag showed them
        assert max(highest.values()) >= 1, highest
        assert healthy(port, "/healthz") == (200, "ok\n")
    finally:
        stop(proc)


# the label values metrics start at 0 are the ones their producers use ------------------------------------

def test_known_label_values_match_their_producers():
    rust = (ROOT / "shipper" / "lines" / "src" / "records.rs").read_text()
    kinds = re.search(r"pub const KINDS: \[&str; \d+\] = \[(.*?)\];", rust, re.S).group(1)
    assert tuple(re.findall(r'"(\w+)"', kinds)) == NATIVE_ERROR_KINDS
    python = "".join(p.read_text() for p in (ROOT / "shipper").glob("*.py"))
    counted = set(re.findall(r'errors\["(\w+)"\]', python))
    assert counted and counted <= set(AGENT_ERROR_KINDS)         # every kind the Python side counts starts at 0
    assert set(ERROR_KINDS) == {*NATIVE_ERROR_KINDS, *AGENT_ERROR_KINDS}
    wire = (ROOT / "schemas" / "wire.py").read_text()
    assert set(re.findall(r'WireError\("(\w+)"', wire)) == set(WIRE_REASONS)
    redact = (ROOT / "shipper" / "lines" / "src" / "redact.rs").read_text()
    assert 'format!("custom_{i}")' in redact        # shipper.metrics.redaction_rules names them so
