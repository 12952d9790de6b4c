"""Metrics and health over HTTP, the same way for both components.

A component gives a function that builds its metric families from its live
state at scrape time (nothing is copied on the hot path) and two checks:
liveness (``/healthz``) and readiness (``/readyz``). prometheus_client does the
exposition: exact values, label escaping, and OpenMetrics when the scraper's
Accept header asks for it. Each component has a registry of its own (never the
library's global one) with the process and platform collectors in it.

The HTTP server is a small asyncio one, so it runs in the component's event
loop and reads its state without locks. It serves GET and HEAD of
``/metrics``, ``/healthz`` and ``/readyz``; other paths are 404, other methods 405.
A check answers 200 or 503 with a one-line reason.
"""

from __future__ import annotations

import asyncio
import bisect
import gzip
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from http import HTTPStatus

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from runtime.config import version
from runtime.errors import ConfigError

log = logging.getLogger("loglake.metrics")

# A check: (healthy, one line saying why).
Check = Callable[[], Awaitable[tuple[bool, str]]]
_MAX_HEADERS = 100
_MAX_CONNECTIONS = 16
_TIMEOUT_S = 5.0


class Histogram:
    """Observations counted into fixed buckets, read by a collector at scrape time (prometheus_client's
    own Histogram would tie the code that observes to a registry and a metric name)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)   # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # Prometheus buckets are upper bounds, inclusive: a value equal to a bound belongs to it.
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, n in zip([*map(floatToGoString, self.bounds), "+Inf"], self.counts):
            total += n
            out.append((bound, float(total)))
        return out


class Families:
    """The metric families of one scrape, each named ``<prefix>_<name>``; counters get ``_total``
    from the exposition, so ``name`` is given without it."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.out: list[Metric] = []

    def counter(self, name: str, doc: str, value: float) -> None:
        self.out.append(CounterMetricFamily(f"{self.prefix}_{name}", doc, value=value))

    def gauge(self, name: str, doc: str, value: float) -> None:
        self.out.append(GaugeMetricFamily(f"{self.prefix}_{name}", doc, value=value))

    def counters(self, name: str, doc: str, label: str, values: Mapping[str, float], known: Iterable[str] = ()) -> None:
        """A labelled counter; every ``known`` label value is present from the start, at 0, so a rate over
        it works before the first event and an alert on it can tell 'none' from 'not exported'."""
        family = CounterMetricFamily(f"{self.prefix}_{name}", doc, labels=[label])
        for key in sorted({*known, *values}):
            family.add_metric([key], values.get(key, 0))
        self.out.append(family)

    def gauges(self, name: str, doc: str, label: str, values: Mapping[str, float]) -> None:
        family = GaugeMetricFamily(f"{self.prefix}_{name}", doc, labels=[label])
        for key in sorted(values):
            family.add_metric([key], values[key])
        self.out.append(family)

    def histogram(self, name: str, doc: str, h: Histogram) -> None:
        self.out.append(HistogramMetricFamily(f"{self.prefix}_{name}", doc, buckets=h.cumulative(), sum_value=h.sum))


class _Live(Collector):
    def __init__(self, component: str, build: Callable[[Families], None]) -> None:
        self.component = component
        self.prefix = f"loglake_{component}"
        self.build = build
        self.version = version()
        self.started = time.time()

    def collect(self) -> Iterable[Metric]:
        f = Families(self.prefix)
        f.out.append(InfoMetricFamily("loglake_build", "the running loglake", {"version": self.version,
                                                                              "component": self.component}))
        f.gauge("start_time_seconds", "when this component started (Unix time)", self.started)
        self.build(f)
        return f.out


def registry(component: str, build: Callable[[Families], None]) -> CollectorRegistry:
    """A registry for ``loglake_<component>_*`` families built by ``build`` at every scrape, with
    ``loglake_build_info``, the start time, ``process_*`` and ``python_info``."""
    reg = CollectorRegistry()
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    reg.register(_Live(component, build))
    return reg


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "-"


class _Request:
    def __init__(self, method: str, path: str, headers: dict[str, str]) -> None:
        self.method, self.path, self.headers = method, path, headers


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """The request line and headers; None if it is not HTTP (the caller bounds the time it takes)."""
    parts = (await reader.readline()).decode("latin-1").split()
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    return _Request(parts[0], parts[1].split("?", 1)[0], headers)


async def serve(address: str, reg: CollectorRegistry, healthz: Check, readyz: Check) -> asyncio.AbstractServer:
    """Serve /metrics, /healthz and /readyz on ``host:port`` in the running event loop."""
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"metrics_address {address!r} is not host:port (e.g. 0.0.0.0:2020)") from None
    checks = {"/healthz": healthz, "/readyz": readyz}

    async def respond(req: _Request) -> tuple[int, bytes, dict[str, str]]:
        if req.path != "/metrics" and req.path not in checks:
            return 404, b"not found\n", {}
        if req.method not in ("GET", "HEAD"):
            return 405, b"method not allowed\n", {"Allow": "GET, HEAD"}
        if req.path in checks:
            ok, why = await checks[req.path]()
            return (200 if ok else 503), _one_line(why).encode() + b"\n", {}
        encoder, ctype = choose_encoder(req.headers.get("accept", ""))
        body = encoder(reg)
        extra = {"Content-Type": ctype}
        if "gzip" in req.headers.get("accept-encoding", ""):
            body, extra["Content-Encoding"] = gzip.compress(body, 1), "gzip"
        return 200, body, extra

    # Connections still sending their request, oldest first. Each holds a descriptor the component needs
    # for its files: past a scraper's and a prober's few, the oldest is dropped for the newest, so slow or
    # idle clients can neither pile up nor keep a probe out.
    waiting: dict[asyncio.StreamWriter, None] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(waiting) >= _MAX_CONNECTIONS:
            oldest = next(iter(waiting))
            del waiting[oldest]   # now: its handler only sees the abort on a later turn of the loop
            oldest.transport.abort()
        waiting[writer] = None
        try:
            try:
                req = await asyncio.wait_for(_read_request(reader), _TIMEOUT_S)
            finally:
                waiting.pop(writer, None)
            if req is None:
                status, body, extra = 400, b"bad request\n", dict[str, str]()
            else:
                try:
                    status, body, extra = await respond(req)
                except Exception as e:  # noqa: BLE001 - a failing collector must not take the component down
                    log.error("cannot answer a metrics request", extra={"path": req.path, "error": repr(e)})
                    status, body, extra = 500, b"internal error\n", {}
            head = {"Content-Type": "text/plain; charset=utf-8", **extra, "Content-Length": str(len(body)),
                    "Connection": "close"}
            writer.write(f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()
                         + "".join(f"{k}: {v}\r\n" for k, v in head.items()).encode() + b"\r\n"
                         + (b"" if req is not None and req.method == "HEAD" else body))
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.CancelledError, ConnectionError, ValueError):
            pass  # slow, gone, a line over the limit, or the server closing
        finally:
            writer.close()

    try:
        server = await asyncio.start_server(handle, host, port)
    except OSError as e:
        raise ConfigError(f"cannot serve metrics on {address}: {e.strerror}; choose another metrics_address") from None
    log.info("serving /metrics, /healthz and /readyz", extra={"address": address})
    return server
