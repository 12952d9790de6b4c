"""loglake-shipper: tail container logs and ship them."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from schemas import completion, jsonlog
from schemas.config import version
from schemas.errors import ConfigError, LoglakeError
from schemas.metrics import Registry, serve
from shipper import config
from shipper.agent import Agent
from shipper.transport import create

log = logging.getLogger("loglake.shipper")


def _lag(agent: Agent) -> list[tuple[dict[str, str], float]]:
    out = []
    for src in [*agent.active.values(), *agent.retired]:
        try:
            out.append(({"path": src.path}, float(src.tail.unread())))
        except OSError:
            continue
    return out


def metrics(agent: Agent) -> Registry:
    r = Registry("loglake_shipper")
    for name, what in (("lines_read", "lines read from files"), ("bytes_read", "bytes read from files"),
                       ("files_opened", "files opened"), ("files_closed", "files closed after rotation or deletion"),
                       ("rotations", "rotations and deletions seen"), ("truncations", "copytruncate rotations seen"),
                       ("rotated_files_adopted", "rotated files found beside a path and read (after a restart, "
                                                 "or created and rotated between two polls)")):
        r.value(f"{name}_total", "counter", what, lambda n=name: agent.stats[n])
    for name, what in (("records_shipped", "records acknowledged by the transport"),
                       ("batches_acked", "batches acknowledged by the transport"),
                       ("batches_buffered", "batches written to the disk buffer"),
                       ("send_failures", "batch sends that failed or timed out"),
                       ("buffer_write_failures", "batches the disk buffer could not take (held in memory)")):
        r.value(f"{name}_total", "counter", what, lambda n=name: agent.delivery.stats[n])
    r.value("buffer_bytes", "gauge", "bytes in the disk buffer", lambda: agent.delivery.buffer.bytes)
    r.value("buffer_batches", "gauge", "batches waiting in the disk buffer",
            lambda: sum(1 for p in agent.delivery.queue if p.buffered is not None and not p.acked))
    r.value("inflight_batches", "gauge", "batches sent and not yet acknowledged", lambda: agent.delivery.inflight)
    r.value("reading_paused", "gauge", "1 while reading is paused because the disk buffer is full or unwritable",
            lambda: float(agent.paused))
    r.value("open_files", "gauge", "files held open", lambda: len(agent.active) + len(agent.retired))
    r.add("redactions_total", "counter", "redactions by rule",
          lambda: [({"rule": k}, v) for k, v in sorted(agent.redactions.items())])
    r.add("errors_total", "counter", "input problems by kind (flagged or counted, never dropped silently)",
          lambda: [({"kind": k}, v) for k, v in sorted(agent.errors.items())])
    r.add("file_lag_bytes", "gauge", "bytes not read yet, per file", lambda: _lag(agent))
    return r


def _health(agent: Agent) -> tuple[bool, str]:
    if agent.paused:
        return False, "reading paused: disk buffer full or not writable"
    return True, "ok" if not agent.delivery.backlog else "ok (buffering: transport unavailable)"


async def _run(args: argparse.Namespace) -> None:
    settings = config.load(args.config)
    transport = create(settings.transport, settings.shipper)
    try:
        agent = Agent(settings, transport)
    except ValueError as e:  # a bad multiline or redaction rule
        raise ConfigError(f"[shipper] {e}") from None
    server = None
    if settings.shipper.metrics_address:
        server = await serve(settings.shipper.metrics_address, metrics(agent), lambda: _health(agent))
    await transport.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    log.info("shipper started", extra={"transport": transport.name, "node": settings.shipper.node_name,
                                       "include": [str(p) for p in settings.shipper.include]})
    try:
        await agent.run(once=args.once)
    finally:
        await transport.close()
        if server is not None:
            server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loglake-shipper", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    completion.files(parser.add_argument("--config", "-c", help="loglake TOML file (LOGLAKE_* variables override it)"))
    parser.add_argument("--print-completion", action=completion.PrintCompletion)
    parser.add_argument("--once", action="store_true",
                        help="ship everything present, wait for every acknowledgement, save the checkpoint, exit")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    jsonlog.setup(args.log_level)
    try:
        asyncio.run(_run(args))
    except LoglakeError as e:
        if args.debug:
            raise
        print(f"loglake-shipper: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
