"""Loki's ``/tail``: a WebSocket that sends a selector's lines as they land, to many callers at once.

New records arrive in new hot files. While anyone tails, one poll a second asks the catalog for hot files
not seen before and reads their rows once (an audited read by the service itself); each connection's
grant and LogQL are then applied to those rows in an in-memory DuckDB of their own (no keys, no files),
so a thousand tails cost one lake read a second, not a thousand. A connection first gets the lines since
``start`` (default an hour ago, at most ``limit``), then the new ones. A caller that does not keep up
loses frames, never memory: beyond ``TAIL_QUEUE`` frames waiting, new lines are reported in
``dropped_entries`` instead, as Loki does. Connections beyond ``[serve] max_tail_connections`` are
refused with 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
from aiohttp import WSMsgType, web

from lake.catalog.model import Tier
from query.connect import Lake, Restriction, Sandbox
from query.serve import logql, loki
from runtime.errors import LoglakeError, QueryError
from schemas.record import SECOND_NS

log = logging.getLogger("loglake.serve")
TAIL_QUEUE = 64                 # frames waiting for a slow caller, at most
_SEND_TIMEOUT_S = 10.0
# The columns a tail's LogQL and a grant look at, as the new files' rows are held between polls.
_ROW_COLUMNS = ("epoch_ns(time) AS ns, time, namespace, pod, container, stream, node, severity_number, "
                "severity_text, trace_id, span_id, body")


@dataclass(eq=False)
class Tail:
    """One connection: the rows it wants of the new ones (``columns`` where ``where``, grant included) and
    how a batch of them becomes a frame: Loki's streams (``loki``) or an Arrow IPC stream of the CLI's
    columns (``loglake-query --server tail -f``)."""
    columns: str
    grant: str             # the rows it may see (SQL), applied before ``where``
    where: str
    params: list[object]
    loki: bool = True
    failed: str | None = None
    queue: asyncio.Queue[str | bytes] = field(default_factory=lambda: asyncio.Queue(TAIL_QUEUE))
    sent: int = 0
    dropped: int = 0
    namespaces: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of_logql(cls, q: logql.LogQuery, restrict: Restriction) -> Tail:
        clauses, params = logql.where(q)
        return cls(f"ns, {loki.LABEL_COLUMNS}, body", restrict.sql, " AND ".join(clauses) or "TRUE", params)

    def frame(self, table: pa.Table) -> tuple[str | bytes, dict[str, int]]:
        """A batch as this connection's frame, and its rows by namespace."""
        if self.loki:
            streams = loki.streams_of(table)
            return orjson.dumps({"streams": streams, "dropped_entries": None}).decode(), loki.seen_in(streams)
        return ipc_bytes(table), loki.namespaces_of(table)


class Full(web.HTTPTooManyRequests):
    pass


class TailHub:
    def __init__(self, run: Callable[[Callable[[Lake], Any]], Awaitable[Any]], max_connections: int,
                 interval_s: float = 1.0) -> None:
        self._run = run
        self.max_connections = max_connections
        self.interval_s = interval_s
        self.tails: set[Tail] = set()
        self._seen: set[str] | None = None
        self._reading = asyncio.Lock()   # one look at the catalog at a time: each new file is seen once
        self._reserved = 0
        self._task: asyncio.Task[None] | None = None
        # filtering happens off the event loop, in one thread with its own in-memory database
        self._filter = ThreadPoolExecutor(1, thread_name_prefix="loglake-serve-tail")

    def reserve(self) -> None:
        """Room for one more tail, or 429 beyond ``max_connections`` (tails open and being opened), before
        anything is read for it; ``join`` takes the room, ``release`` gives it back."""
        if len(self.tails) + self._reserved >= self.max_connections:
            raise Full(text=f"{len(self.tails) + self._reserved} tails are open, the most [serve] "
                            "max_tail_connections allows; close one or try again later")
        self._reserved += 1

    def release(self) -> None:
        self._reserved -= 1

    async def join(self, tail: Tail) -> None:
        """From now on, ``tail`` (in the room ``reserve`` kept) gets the rows of every hot file the catalog did
        not list before."""
        self.release()
        self.tails.add(tail)
        try:
            async with self._reading:
                if self._seen is None:
                    await self._run(self._new_rows)   # the files there now: what a tail does not get
        except BaseException:
            self.tails.discard(tail)
            raise
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())

    def leave(self, tail: Tail) -> None:
        self.tails.discard(tail)

    async def _poll(self) -> None:
        while self.tails:
            await asyncio.sleep(self.interval_s)
            try:
                async with self._reading:
                    rows = await self._run(self._new_rows)
            except Exception:   # a failed poll (storage, a file compacted away): the next one tries again
                continue
            if rows is not None and rows.num_rows:
                try:
                    delivered = await asyncio.get_running_loop().run_in_executor(self._filter, self._deliver, rows,
                                                                                 list(self.tails))
                except Exception:   # a defect: logged, and the tails carry on with the next files
                    log.exception("delivering new lines to tails failed")
                    continue
                for tail, got in delivered:   # queued here, on the event loop (asyncio queues are not threadsafe)
                    if isinstance(got, str):
                        tail.failed = got
                        with contextlib.suppress(asyncio.QueueFull):   # a full queue wakes it soon anyway
                            tail.queue.put_nowait(b"")                # wakes the connection to close it
                    elif got.num_rows:
                        _offer(tail, got)
        self._seen = None    # nobody tails: the next tail starts from what is there then

    def _new_rows(self, lake: Lake) -> pa.Table | None:
        hot = lake.catalog.files(tier=Tier.HOT)
        if self._seen is None:
            self._seen = {f.path for f in hot}
            return None
        new = [f for f in hot if f.path not in self._seen]
        self._seen.update(f.path for f in new)
        if not new:
            return None
        return lake.query(new, f"SELECT {_ROW_COLUMNS} FROM logs", what={"command": "serve tail (new hot files)"})

    def _deliver(self, rows: pa.Table, tails: list[Tail]) -> list[tuple[Tail, pa.Table | str]]:
        """Each tail's rows of ``rows`` (or why its query failed on them), in the filtering thread."""
        # Each grant's rows first, as a table of their own: a tail's filters then see no other row, whatever
        # order DuckDB would test conditions in.
        by_grant: dict[str, list[Tail]] = {}
        for tail in tails:
            by_grant.setdefault(tail.grant, []).append(tail)
        out: list[tuple[Tail, pa.Table | str]] = []
        everything = Sandbox(rows)
        try:
            for grant, theirs in by_grant.items():
                box = Sandbox(everything.execute(f"SELECT * FROM logs WHERE {grant}"))
                try:
                    for tail in theirs:
                        try:
                            out.append((tail, box.execute(
                                f"SELECT {tail.columns} FROM logs WHERE {tail.where} ORDER BY ns", tail.params)))
                        except LoglakeError as e:   # this tail's query fails on these rows: it ends, others go on
                            out.append((tail, str(e)))
                finally:
                    box.close()
        finally:
            everything.close()
        return out

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._filter.shutdown(wait=False)


def _offer(tail: Tail, table: pa.Table) -> None:
    """Queue a frame; a full queue (a caller not reading) turns its lines into dropped entries."""
    try:
        frame, seen = tail.frame(table)
        tail.queue.put_nowait(frame)
        tail.sent += table.num_rows
        tail.namespaces.update(seen)
    except asyncio.QueueFull:
        tail.dropped += table.num_rows


def ipc_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as out:
        out.write_table(table)
    return sink.getvalue()


async def serve_tail(request: web.Request, hub: TailHub, tail: Tail, first: pa.Table | None,
                     entry: dict[str, Any], still_allowed: Callable[[], bool],
                     recheck_s: float) -> web.WebSocketResponse:
    """The connection's life: the first lines, then whatever the hub queues, until either side closes, or
    ``still_allowed`` (asked every ``recheck_s``) says the caller's credential or grant has changed."""
    await hub.join(tail)
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=4096)
    try:
        await ws.prepare(request)
    except BaseException:
        hub.leave(tail)
        raise
    if first is not None and first.num_rows:
        _offer(tail, first)

    async def reader() -> None:
        async for msg in ws:   # a caller sends nothing; reading notices its close
            if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break

    reading = asyncio.create_task(reader())
    reported = 0
    checked = time.monotonic()
    getting: asyncio.Task[str | bytes] | None = None
    try:
        while not ws.closed:
            if time.monotonic() - checked >= recheck_s:
                if not still_allowed():   # revoked, expired, or its roles changed: it stops here
                    entry["error"] = "the credential or its grant changed while tailing"
                    await ws.close(code=1008, message=b"credential no longer valid")
                    break
                checked = time.monotonic()
            getting = getting or asyncio.create_task(tail.queue.get())
            done, _ = await asyncio.wait({getting, reading}, timeout=recheck_s, return_when=asyncio.FIRST_COMPLETED)
            if reading in done:
                break
            if getting not in done:
                continue
            frame, getting = getting.result(), None
            if tail.failed is not None:
                await ws.close(code=1011, message=tail.failed[:120].encode())
                entry["error"] = tail.failed
                break
            if tail.dropped > reported and isinstance(frame, str):   # Loki's way to say what was missed
                doc = orjson.loads(frame)
                doc["dropped_entries"] = [{"labels": {}, "timestamp": str(time.time_ns())}] * min(
                    100, tail.dropped - reported)
                frame, reported = orjson.dumps(doc).decode(), tail.dropped
            send = ws.send_str(frame) if isinstance(frame, str) else ws.send_bytes(frame)
            await asyncio.wait_for(send, _SEND_TIMEOUT_S)
    except (asyncio.TimeoutError, ConnectionResetError):
        pass
    finally:
        hub.leave(tail)
        reading.cancel()
        if getting is not None:
            getting.cancel()
        await ws.close()
        entry.update({"rows": tail.sent, "dropped": tail.dropped, "namespaces": dict(tail.namespaces)})
    return ws


def start_of(args: dict[str, Any], max_range_s: int) -> int:
    """Where a tail's first lines start: ``start``, an hour ago by default, at most ``max_range_s`` ago."""
    now = time.time_ns()
    start = loki.parse_time(args.get("start"), now - 3600 * SECOND_NS)
    if now - start > max_range_s * SECOND_NS:
        raise QueryError(f"start is more than {max_range_s}s ago (max_range_s); tail from later")
    return start
