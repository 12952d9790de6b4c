"""Spool transport: batches as segment files in ``<spool dir>/<node>/``.

A segment is acknowledged once it is durable (fsync + rename + directory fsync).
Sequence numbers continue after the highest segment present; the aggregator
always leaves the newest segment of a node in place, so numbers never restart.
"""

from __future__ import annotations

import asyncio

from schemas.durable import write_durably
from schemas.transport import SpoolSettings, list_segments, safe_name, segment_name


class SpoolTransport:
    name = "spool"

    def __init__(self, settings: SpoolSettings, node: str) -> None:
        self.dir = settings.dir / safe_name(node)
        self._next = 0
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        segments = list_segments(self.dir)
        self._next = segments[-1][0] + 1 if segments else 0

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        # Segments must land in sequence order: one write at a time.
        async with self._lock:
            seq = self._next
            self._next += 1
            await asyncio.to_thread(write_durably, self.dir / segment_name(seq), value, 0o640)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def reset(self) -> None:
        return None

    async def close(self) -> None:
        return None
