"""Shared fixtures: config files, CRI log files, and the session's real TLS broker.

The broker is the one `make test` starts (deploy/kafka/kafka.sh). When
LOGLAKE_TEST_CERTS is set (as `make test` does) a broker that does not answer
fails the Kafka tests; without it they are skipped, so a quick `pytest` on a
laptop without Java still runs everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

KAFKA_BOOTSTRAP = os.environ.get("LOGLAKE_TEST_BOOTSTRAP", "127.0.0.1:19093")


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    certs: Path


@pytest.fixture(scope="session")
def broker() -> Broker:
    certs = os.environ.get("LOGLAKE_TEST_CERTS")
    if not certs:
        pytest.skip("no broker: run the tests with 'make test' (LOGLAKE_TEST_CERTS unset)")
    from aggregator.source.kafka import ping
    from runtime.transport import KafkaSettings
    c = Path(certs)
    kafka = KafkaSettings(bootstrap_servers=KAFKA_BOOTSTRAP, ca_file=c / "ca.crt", request_timeout_ms=5000)
    asyncio.run(ping(kafka, c / "aggregator.crt", c / "aggregator.key"))  # fails loudly if the broker is down
    return Broker(KAFKA_BOOTSTRAP, c)


def toml_str(p: Path | str) -> str:
    return '"' + str(p).replace("\\", "\\\\") + '"'


def toml_value(v: object) -> str:
    """TOML for a str, number, bool, list or table of those (JSON's spelling is valid TOML for them)."""
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return orjson.dumps(v).decode()


def write_config(tmp: Path, *, broker: Broker | None = None, topic: str | None = None,
                 shipper_cert: str | None = "shipper", aggregator_cert: str | None = "aggregator",
                 shipper: dict | None = None, kafka: dict | None = None, aggregator: dict | None = None,
                 tiers: dict | None = None, retention: dict | None = None) -> Path:
    """A loglake.toml under ``tmp``: spool transport unless ``broker`` is given.
    ``shipper``, ``kafka``, ``aggregator`` and ``tiers`` override keys of those sections."""
    opts = {"node_name": "node-a", "include": [str(tmp / "logs" / "**" / "*.log")],
            "data_dir": str(tmp / "shipper"), "batch_max_wait_ms": 50, **(shipper or {})}
    lines = ["[shipper]", *(f"{k} = {toml_value(v)}" for k, v in opts.items()), "",
             "[spool]", f"dir = {toml_str(tmp / 'spool')}", "",
             "[aggregator]", f"data_dir = {toml_str(tmp / 'lake')}", f'group_id = "g-{uuid.uuid4().hex[:8]}"',
             *(f"{k} = {toml_value(v)}" for k, v in {"flush_interval_ms": 200, **(aggregator or {})}.items())]
    if broker:
        if aggregator_cert:
            lines += [f"tls_cert_file = {toml_str(broker.certs / (aggregator_cert + '.crt'))}",
                      f"tls_key_file = {toml_str(broker.certs / (aggregator_cert + '.key'))}"]
        lines[len(opts) + 1:len(opts) + 1] = ([f"tls_cert_file = {toml_str(broker.certs / (shipper_cert + '.crt'))}",
                       f"tls_key_file = {toml_str(broker.certs / (shipper_cert + '.key'))}"] if shipper_cert else [])
        lines += ["", "[kafka]", f'bootstrap_servers = "{broker.bootstrap}"',
                  f'topic = "{topic or "t-" + uuid.uuid4().hex[:12]}"', "partitions = 2",
                  f"ca_file = {toml_str(broker.certs / 'ca.crt')}",
                  *(f"{k} = {toml_value(v)}" for k, v in {"request_timeout_ms": 10000, **(kafka or {})}.items())]
    for name, section in (("tiers", tiers), ("retention", retention)):
        if section:
            lines += ["", f"[{name}]", *(f"{k} = {toml_value(v)}" for k, v in section.items())]
    path = tmp / "loglake.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def pod_log(root: Path, namespace: str, pod: str, container: str, uid: str = "0f1e2d3c-0000-4000-8000-000000000001") -> Path:
    """Path of a container log in kubelet's /var/log/pods layout under ``root``."""
    p = root / "logs" / "pods" / f"{namespace}_{pod}_{uid}" / container / "0.log"
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def cri(ts: str, text: str, stream: str = "stdout", tag: str = "F") -> str:
    return f"{ts} {stream} {tag} {text}\n"


# Lines of two containers, with what the pipeline must make of them.
CHECKOUT = ("shop", "checkout-5d8f7-abcde", "app")
FRONTEND = ("shop", "frontend-7c9b4-fghij", "nginx")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def write_sample_logs(tmp: Path) -> list[tuple]:
    """Write CRI files; return the expected (container, offset, stream, level, severity, trace_id, body)
    rows in (container, offset) order."""
    checkout = pod_log(tmp, *CHECKOUT)
    frontend = pod_log(tmp, *FRONTEND)
    c_lines = [
        cri("2026-11-24T10:00:00.000000001Z",
            '{"level":"info","msg":"order placed","trace_id":"' + TRACE + '","span_id":"00f067aa0ba902b7","order":7}'),
        cri("2026-11-24T10:00:00.500000000Z", '{"level":"error","msg":"payment ', tag="P"),
        cri("2026-11-24T10:00:00.500000000Z", "boom", stream="stderr"),
        cri("2026-11-24T10:00:00.500000000Z", 'declined","trace_id":"' + TRACE + '"}', tag="F"),
    ]
    f_lines = [
        cri("2026-11-24T10:00:00.100000000Z", f"INFO GET /api/cart 200 trace_id={TRACE}"),
        cri("2026-11-24T10:00:01.000000000Z", "WARN slow upstream took 2300ms"),
    ]
    checkout.write_text("".join(c_lines))
    frontend.write_text("".join(f_lines))
    off = [0]
    for ln in c_lines[:-1]:
        off.append(off[-1] + len(ln.encode()))
    f_off = [0, len(f_lines[0].encode())]
    return [
        ("app", off[0], "stdout", "info", 9, TRACE, "order placed"),
        ("app", off[1], "stdout", "error", 17, TRACE, "payment declined"),
        ("app", off[2], "stderr", None, 0, None, "boom"),
        ("nginx", f_off[0], "stdout", "INFO", 9, TRACE, f"INFO GET /api/cart 200 trace_id={TRACE}"),
        ("nginx", f_off[1], "stdout", "WARN", 13, None, "WARN slow upstream took 2300ms"),
    ]


STORED_SQL = ("SELECT container, source_offset, stream, severity_text, severity_number, trace_id, body "
              "FROM logs ORDER BY container, source_offset")


def stored_rows(config: Path) -> list[tuple]:
    import query
    return query.connect(str(config)).execute(STORED_SQL).fetchall()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_metrics(port: int, needle: str, what: str, timeout: float = 10) -> str:
    """Poll http://127.0.0.1:port/metrics until it contains ``needle``; returns that page."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
            if needle in body:
                return body
        except OSError:
            pass
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


# A lake with several hot files per partition whose records span hours and a UTC midnight.
LAKE_START = 1_795_215_600  # 2026-11-20T23:00:00Z
LAKE_NODES = ("node-a", "node-b")


def lake_trace(i: int) -> str:
    return f"{i % 40 + 1:032x}"


def fill_lake(tmp: Path, config: Path, *, rounds: int = 3, lines: int = 60, step_s: int = 30,
              message: Callable[[str, str, int, int], str] | None = None) -> int:
    """Ship CRI lines from two nodes (two spool partitions) in ``rounds`` rounds, each consumed by
    ``loglake-aggregator --once`` (one hot file per partition per round). Per node, two containers write
    ``lines`` lines each per round, ``step_s`` apart; every second line carries one of 40 trace ids.
    ``message(node, container, round, i)`` gives the lines' messages (default ``"node container rR iI"``).
    Returns the number of records stored."""
    from aggregator.cli.run import main as aggregator
    from shipper.cli import main as shipper
    n = 0
    for r in range(rounds):
        for node in LAKE_NODES:
            for c, (ns, pod, container) in enumerate((("shop", f"web-{node}", "nginx"),
                                                      ("pay", f"api-{node}", "app"))):
                path = pod_log(tmp / node, ns, pod, container, uid=f"00000000-0000-4000-8000-{c:012d}")
                with path.open("a") as f:
                    for i in range(lines):
                        t = LAKE_START + (r * lines + i) * step_s
                        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{c * 1000 + i:09d}Z"
                        doc = {"level": "error" if i % 7 == 0 else "info", "msg": message(node, container, r, i) if message else f"{node} {container} r{r} i{i}"}
                        if i % 2 == 0:
                            doc["trace_id"] = lake_trace(i + r)
                        f.write(cri(ts, orjson.dumps(doc).decode()))
                        n += 1
            env = {"LOGLAKE_SHIPPER_NODE_NAME": node, "LOGLAKE_SHIPPER_DATA_DIR": str(tmp / node / "state"),
                   "LOGLAKE_SHIPPER_INCLUDE": str(tmp / node / "logs" / "**" / "*.log")}
            with _environ(env):
                assert shipper(["--config", str(config), "--once", "--log-level", "WARNING"]) == 0
        assert aggregator(["--config", str(config), "--once", "--log-level", "WARNING"]) == 0
    return n


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class Built:
    records: list[dict]
    errors: dict[str, int]
    redactions: dict[str, int]


def record_builder(fmt: str = "plain", **shipper: object):
    """The shipper's native per-line core for one file of format ``fmt`` (``shipper`` overrides
    [shipper] settings), with the counters it reports to: (builder, errors, redactions)."""
    from collections import Counter

    from shipper.config import ShipperConfig
    from shipper.enrich import K8sMeta
    from shipper.records import RecordBuilder, processing

    errors: Counter[str] = Counter()
    redactions: Counter[str] = Counter()
    builder = RecordBuilder(processing(ShipperConfig(node_name="n1", **shipper)), source_id="s1", path="/x.log",
                            meta=K8sMeta(), fmt=fmt, errors=errors, redactions=redactions)
    return builder, errors, redactions


def decode_records(records) -> list[dict]:
    """shipper.batch.Records → one dict per record, with the fields left out at their wire default filled in."""
    from schemas.wire import WIRE_DEFAULTS

    out = []
    for line in records.data.splitlines():
        rec = orjson.loads(line)
        for name, default in WIRE_DEFAULTS.items():
            rec.setdefault(name, rec[default] if isinstance(default, str) else default)
        out.append(rec)
    return out


def line_by_line(fmt: str, **shipper: object):
    """(builder, feed): feed(line) reads one more line of the file and returns the records it completed."""
    from shipper.tail import Chunk

    builder = record_builder(fmt, **shipper)[0]
    pos = 0

    def feed(line: bytes) -> list[dict]:
        nonlocal pos
        data, start = line + b"\n", pos
        pos += len(data)
        return decode_records(builder.build(Chunk(data, start, pos, False))[0])
    return builder, feed


def build_records(lines: list[bytes], fmt: str = "plain", *, drain: bool = True, **shipper: object) -> Built:
    """Run ``lines`` (no newlines; laid end to end from offset 0) through the native core as one file."""
    from shipper.tail import Chunk

    builder, errors, redactions = record_builder(fmt, **shipper)
    data = b"".join(line + b"\n" for line in lines)
    out = decode_records(builder.build(Chunk(data, 0, len(data), True))[0]) if data else []
    builder.count()
    if drain:
        out += decode_records(builder.drain())
    return Built(out, dict(errors), dict(redactions))


def module_lake(tmp_path_factory, name: str, rounds: int, lines: int) -> tuple[Path, Path, int]:
    """(dir, config, records) of a lake filled once for a test module (fill_lake on the spool)."""
    tmp = tmp_path_factory.mktemp(name)
    config = write_config(tmp)
    return tmp, config, fill_lake(tmp, config, rounds=rounds, lines=lines)
