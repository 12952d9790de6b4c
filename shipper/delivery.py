"""Delivery: batches to the transport, in order, with a disk buffer for outages.

Every batch takes a place in one ordered queue (told to shipper.positions). Its
marks are delivered only from the head of that queue, once its batch is
acknowledged, so a position never passes a batch that is still in flight or
buffered.

A batch whose send fails, or that is not acknowledged within ``ack_timeout``,
moves to the disk buffer (keeping its place); from then on new batches go to
the buffer too, so order holds, and the oldest buffered batch is retried with
backoff. When the buffer has drained, batches go straight out again. When
the disk buffer cannot be written either (a full disk), the batch is held in
memory in its place and reading pauses (``held``) until it is delivered: a
full disk stops the shipper reading, it never drops or crash-loops.

Only what is retriable is retried (runtime.errors). A batch the transport
refuses for good is set aside (shipper.buffer.SetAside) and its marks are
delivered in its place, so one oversized batch cannot stop every container's
delivery; a denied principal (``denied``) stops the shipper with one sentence,
its batches kept in the disk buffer for the next start.

For /metrics and the health checks (shipper.metrics): ``ack_latency`` is the time
from handing a batch to the transport to its acknowledgement, per batch sent
(the last attempt of a retried one), and ``ticked_at`` is when the agent's loop
last handed batches over: the loop calls ``send`` on every turn, so a stale
``ticked_at`` means the loop is wedged, not merely that the broker is away.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from dataclasses import dataclass

from runtime.errors import AccessDeniedError, LoglakeError, TransportError
from runtime.metrics import Histogram
from schemas import wire
from shipper.batch import Outgoing
from shipper.buffer import Buffered, DiskBuffer, Marks, SetAside
from shipper.identity import Position
from shipper.positions import Positions
from shipper.transport.base import Transport

log = logging.getLogger("loglake.shipper")
RETRY_MAX_S = 10.0
# Seconds; from a local spool's fsync (milliseconds) to a broker's ack_timeout (15 s by default).
ACK_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class Pending:
    key: bytes
    marks: Marks
    records: int
    value: bytes | None = None           # in memory while in flight
    fut: asyncio.Future[None] | None = None
    sent_at: float = 0.0
    answered_at: float | None = None     # when the transport's future completed
    buffered: Buffered | None = None
    held: bool = False                   # waiting in memory: the disk buffer could not be written
    acked: bool = False
    seq: int = 0                         # its place in the queue: the name it is buffered under

    @property
    def waiting(self) -> bool:
        return (self.buffered is not None or self.held) and not self.acked


def _answered_at(p: Pending, _: object) -> None:
    p.answered_at = time.monotonic()


class Delivery:
    def __init__(self, transport: Transport, positions: Positions, buffer: DiskBuffer, set_aside: SetAside, *,
                 node: str, zstd_level: int, max_inflight: int, ack_timeout_s: float) -> None:
        self.transport = transport
        self.positions = positions
        self.buffer = buffer
        self.set_aside = set_aside
        self.denied: AccessDeniedError | None = None
        self.node = node
        self.zstd_level = zstd_level
        self.max_inflight = max_inflight
        self.ack_timeout_s = ack_timeout_s
        self._queue: deque[Pending] = deque()
        self._retry_at = 0.0
        self._retry_delay = 0.5
        self._reset_needed = False
        self.stats = {"records_shipped": 0, "batches_acked": 0, "batches_buffered": 0, "send_failures": 0,
                      "buffer_write_failures": 0, "batches_refused": 0, "records_refused": 0}
        self.ack_latency = Histogram(ACK_LATENCY_BUCKETS)
        self.created_at = time.monotonic()
        self.ticked_at: float | None = None  # None until the agent's loop first hands batches over
        loaded = buffer.load()
        for b in loaded:
            self._enqueue(Pending(b.key, b.marks, b.records, buffered=b, seq=b.seq))
        self._next_seq = loaded[-1].seq + 1 if loaded else 0
        # A damaged buffer segment was moved aside: its lines are read again from the checkpoint, so no
        # later segment's position may let reading skip them (the lake drops what it already has).
        if not buffer.damaged:
            positions.resume(self.buffered_marks())

    def _enqueue(self, p: Pending) -> None:
        self._queue.append(p)
        self.positions.queued(p.marks)

    def buffered_marks(self) -> dict[str, Position]:
        """The furthest position per source already safe in the buffer (read resumes there)."""
        return {sid: pos for p in self._queue if p.buffered is not None for sid, (_, pos) in p.marks.items()}

    @property
    def backlog(self) -> bool:
        return any(p.waiting for p in self._queue)

    @property
    def waiting(self) -> int:
        """Batches waiting for the transport, in the disk buffer or held in memory."""
        return sum(1 for p in self._queue if p.waiting)

    @property
    def buffered(self) -> int:
        """Batches waiting in the disk buffer."""
        return sum(1 for p in self._queue if p.buffered is not None and not p.acked)

    @property
    def held(self) -> bool:
        """Batches wait in memory because the disk buffer cannot be written: stop reading."""
        return any(p.held and not p.acked for p in self._queue)

    @property
    def inflight(self) -> int:
        return sum(1 for p in self._queue if p.fut is not None and not p.acked)

    async def send(self, batches: list[Outgoing]) -> None:
        self.ticked_at = time.monotonic()
        for batch in batches:
            p = Pending(batch.key, {sid: (m.path, m.pos) for sid, m in batch.marks.items()}, batch.count,
                        seq=self._next_seq)
            self._next_seq += 1
            if batch.sent:
                value = wire.encode(self.node, batch.runs, level=self.zstd_level,
                                    positions=[(m.source, m.pos.offset, m.sealed) for m in batch.marks.values()])
                while not self.backlog and self.inflight >= self.max_inflight:
                    await self.settle(wait=True)
                # asked again after the wait: a failure answered meanwhile began a backlog, which this batch joins
                if self.backlog:
                    self._to_buffer(p, value)
                else:
                    await self._transmit(p, value)
            else:
                p.acked = True  # only marks: in order behind the rest, nothing to send
            self._enqueue(p)
        await self.settle()

    async def _transmit(self, p: Pending, value: bytes) -> None:
        p.value, p.sent_at, p.answered_at = value, time.monotonic(), None
        try:
            # A client may block in send() while the broker is away (metadata, full
            # queues); that must not stall reading, so it counts as a failed send.
            p.fut = await asyncio.wait_for(self.transport.send(p.key, value), self.ack_timeout_s)
            # Acknowledgements are collected once per loop turn; the latency is taken when the
            # future completes, not when settle() gets to it.
            if p.fut.done():
                p.answered_at = time.monotonic()
            else:
                p.fut.add_done_callback(functools.partial(_answered_at, p))
        except asyncio.TimeoutError:
            self._failed(p, f"send blocked for {self.ack_timeout_s:g} s")
        except TransportError as e:
            self._answered(p, e)

    def _to_buffer(self, p: Pending, value: bytes, *, keep_future: bool = False) -> None:
        """Write ``p`` to the disk buffer under its place in the queue. ``keep_future``: it is still in flight,
        and its answer may yet come (an acknowledgement removes it from the buffer again)."""
        if not keep_future:
            p.fut = None
        try:
            p.buffered = self.buffer.put(p.seq, p.key, value, p.marks, p.records)
        except OSError as e:
            if not self.held:
                log.error("cannot write the disk buffer; holding batches in memory and pausing reading "
                          "until they are delivered", extra={"error": str(e), "dir": str(self.buffer.dir)})
            self.stats["buffer_write_failures"] += 1
            p.value, p.held = value, True
            return
        p.value = None
        self.stats["batches_buffered"] += 1

    def _failed(self, p: Pending, why: str) -> None:
        self.stats["send_failures"] += 1
        beginning = not self.backlog
        if beginning and self.denied is None:   # a denial has its own error, and stops the shipper
            log.warning("transport unavailable; buffering batches on disk", extra={"error": why})
        if p.buffered is None and not p.held:
            assert p.value is not None
            self._to_buffer(p, p.value)
        p.fut = None
        if beginning:
            # Every batch still in flight goes to the buffer too, keeping its place: from now on the buffer
            # holds every unacknowledged batch, so resuming after its marks (a restart after kill -9) can
            # never skip the lines of a batch that was in flight and is then lost with the process.
            for q in self._queue:
                if q.fut is not None and not q.acked and q.buffered is None and not q.held and q.value is not None:
                    self._to_buffer(q, q.value, keep_future=True)
        self._reset_needed = True
        self._retry_at = time.monotonic() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_S)

    async def settle(self, wait: bool = False, timeout: float | None = None) -> None:
        """Collect acknowledgements and failures; apply marks from the head of the queue.
        With ``wait``, first wait (at most ``timeout``) for one acknowledgement."""
        if wait:
            futs = [p.fut for p in self._queue if p.fut is not None and not p.acked]
            if futs:
                await asyncio.wait(futs, timeout=min(self.ack_timeout_s, timeout or self.ack_timeout_s),
                                   return_when=asyncio.FIRST_COMPLETED)
        now = time.monotonic()
        for p in self._queue:
            if p.fut is None or p.acked:
                continue
            if p.fut.done():
                exc = p.fut.exception()
                if exc is None:
                    self._acked(p)
                else:
                    self._answered(p, exc)
            elif now - p.sent_at > self.ack_timeout_s:
                p.fut.cancel()
                self._failed(p, f"no acknowledgement within {self.ack_timeout_s:g} s")
        while self._queue and self._queue[0].acked:
            self.positions.delivered(self._queue.popleft().marks)
        await self._replay()

    def _answered(self, p: Pending, e: BaseException) -> None:
        """A send failed: retry what is retriable; set aside a batch refused for good; stop on denial."""
        if not isinstance(e, LoglakeError) or e.retriable:
            self._failed(p, str(e) if isinstance(e, LoglakeError) else repr(e))
        elif isinstance(e, AccessDeniedError):
            if self.denied is None:
                log.error("transport denies access; stopping (batches kept in the disk buffer)", extra={"error": str(e)})
            self.denied = e
            self._failed(p, str(e))
        else:
            self._refused(p, e)

    def _refused(self, p: Pending, e: LoglakeError) -> None:
        try:
            if p.value is not None:
                value = p.value
            else:   # buffered while in flight
                assert p.buffered is not None
                value = self.buffer.value(p.buffered)
            where = self.set_aside.put(value)
        except OSError as oe:   # kept and retried like a failed send until it can be set aside
            self._failed(p, f"{e}; and it cannot be set aside in {self.set_aside.dir}: {oe.strerror}")
            return
        log.error("batch refused for good and set aside; its records are not in the lake until an aggregator "
                  "stores them from there (verify reports them missing)",
                  extra={"error": str(e), "file": str(where), "records": p.records})
        p.acked, p.value, p.fut, p.held = True, None, None, False
        if p.buffered is not None:
            self.buffer.remove(p.buffered)
        self.stats["batches_refused"] += 1
        self.stats["records_refused"] += p.records

    def _acked(self, p: Pending) -> None:
        self.ack_latency.observe(max(0.0, (p.answered_at or time.monotonic()) - p.sent_at))
        p.acked, p.value, p.fut, p.held = True, None, None, False
        if p.buffered is not None:
            self.buffer.remove(p.buffered)
            if not self.backlog:
                log.info("transport back; disk buffer drained")
        self._retry_delay = 0.5
        self.stats["records_shipped"] += p.records
        self.stats["batches_acked"] += 1  # position reports (no records) too: they were sent and acknowledged

    async def _replay(self) -> None:
        """Resend buffered batches oldest first, up to ``max_inflight`` at a time
        (the idempotent producer keeps them in order per partition)."""
        if time.monotonic() < self._retry_at or not self.backlog:
            return
        if self._reset_needed and not self.inflight:
            self._reset_needed = False
            try:
                await self.transport.reset()
            except TransportError as e:
                if isinstance(e, AccessDeniedError):   # a new producer may be the first to be told
                    self.denied = e
                self._failed_reset(str(e))
                return
        budget = self.max_inflight - self.inflight
        for p in self._queue:
            if budget <= 0 or self._reset_needed:
                return
            if p.waiting and p.fut is None:
                value = self.buffer.value(p.buffered) if p.buffered is not None else p.value
                assert value is not None  # held in memory, or in the buffer
                await self._transmit(p, value)
                budget -= 1

    def _failed_reset(self, why: str) -> None:
        self.stats["send_failures"] += 1
        self._reset_needed = True
        self._retry_at = time.monotonic() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_S)
        log.debug("transport still unavailable", extra={"error": why})

    async def drain(self, deadline: float | None) -> bool:
        """Wait until every batch is acknowledged (True) or ``deadline`` passes or the transport denies
        access (False: nothing more will get through)."""
        while self._queue and self.denied is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            await self.settle(wait=True, timeout=left)
            if self._queue and not self.inflight:
                await asyncio.sleep(min(0.05, max(0.0, self._retry_at - time.monotonic())))
        return not self._queue

    def park(self) -> None:
        """At exit: batches still in flight go to the disk buffer, so nothing is read twice."""
        for p in self._queue:
            if p.value is not None and not p.acked and p.buffered is None:
                if p.fut is not None:
                    p.fut.cancel()
                self._to_buffer(p, p.value)
