"""Consuming the spool: each node directory is a partition, each segment an offset.

Consumed segments are deleted once their position is committed in the catalog,
except the newest segment of each node, which keeps the shipper's sequence
numbers going up across restarts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from aggregator.source import Message
from schemas.transport import SpoolSettings, list_segments

TOPIC = "spool"


class SpoolSource:
    topic = TOPIC

    def __init__(self, settings: SpoolSettings, max_segments: int = 64) -> None:
        self.dir = settings.dir
        self.max_segments = max_segments
        self._next: dict[str, int] = {}
        self._behind = True
        self.on_revoke = None  # one spool, one consumer: nothing is ever revoked

    async def start(self, positions: Callable[[], dict[str, int]]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._next = positions()

    def _pending(self) -> list[tuple[str, int, Path]]:
        out = []
        for node_dir in sorted(p for p in self.dir.iterdir() if p.is_dir()):
            start = self._next.get(node_dir.name, 0)
            out += [(node_dir.name, seq, path) for seq, path in list_segments(node_dir) if seq >= start]
        return out

    async def poll(self, timeout: float) -> list[Message]:
        pending = (await asyncio.to_thread(self._pending))[:self.max_segments]
        self._behind = bool(pending)
        if not pending:
            await asyncio.sleep(timeout)
            return []
        out = []
        for node, seq, path in pending:
            out.append(Message(node, seq, await asyncio.to_thread(path.read_bytes)))
            self._next[node] = seq + 1
        return out

    def caught_up(self) -> bool:
        return not self._behind

    async def commit(self, partition: str, next_offset: int) -> None:
        segments = list_segments(self.dir / partition)
        for seq, path in segments[:-1]:
            if seq < next_offset:
                path.unlink(missing_ok=True)

    async def close(self) -> None:
        return None
