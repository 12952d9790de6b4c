"""Metrics in Prometheus text format, and the tiny HTTP server that serves them.

Both components expose ``/metrics`` and ``/healthz`` the same way; a
component registers callables that return its current values, so nothing is
copied on the hot path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

log = logging.getLogger("loglake.metrics")

# name -> (type, help, collect() -> iterable of (labels, value))
Sample = tuple[dict[str, str], float]


class Registry:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._metrics: dict[str, tuple[str, str, Callable[[], Iterable[Sample]]]] = {}

    def add(self, name: str, kind: str, help_text: str, collect: Callable[[], Iterable[Sample]]) -> None:
        self._metrics[f"{self.prefix}_{name}"] = (kind, help_text, collect)

    def value(self, name: str, kind: str, help_text: str, read: Callable[[], float]) -> None:
        self.add(name, kind, help_text, lambda: [({}, read())])

    def render(self) -> str:
        out = []
        for name, (kind, help_text, collect) in sorted(self._metrics.items()):
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
            for labels, value in collect():
                label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
                out.append(f"{name}{{{label_text}}} {value:g}\n" if labels else f"{name} {value:g}\n")
        return "".join(out)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def serve(address: str, registry: Registry, healthy: Callable[[], tuple[bool, str]]) -> asyncio.AbstractServer:
    """Serve GET /metrics and GET /healthz on ``host:port``."""
    host, _, port = address.rpartition(":")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else ""
            if path == "/metrics":
                status, body, ctype = 200, registry.render(), "text/plain; version=0.0.4"
            elif path == "/healthz":
                ok, why = healthy()
                status, body, ctype = (200 if ok else 503), why + "\n", "text/plain"
            else:
                status, body, ctype = 404, "not found\n", "text/plain"
            data = body.encode()
            writer.write(f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host or "0.0.0.0", int(port))
    log.info("serving /metrics and /healthz", extra={"address": address})
    return server
