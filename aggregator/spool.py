"""Consuming the spool: each node directory is a partition, each segment an offset.

Consumed segments are deleted once their position is committed in the catalog,
except the newest segment of each node, which keeps the shipper's sequence
numbers going up across restarts (the shipper also keeps a lease of its own).

A segment below the committed position, other than the one kept, has come
back: a spool restored from an older backup, a shipper whose numbers went back,
or (after a crash between the catalog commit and the delete) one not removed
yet. It is never silently skipped: the node's position goes back to it
(``rewinds``, logged and counted), its records are read again, and the ones
already stored are dropped as duplicates by record id.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from aggregator.source import Message
from schemas.transport import SpoolSettings, list_segments, segment_name

log = logging.getLogger("loglake.aggregator")
TOPIC = "spool"


class SpoolSource:
    topic = TOPIC

    def __init__(self, settings: SpoolSettings, max_segments: int = 64) -> None:
        self.dir = settings.dir
        self.max_segments = max_segments
        self._next: dict[str, int] = {}
        self._committed: dict[str, int] = {}
        self._kept: dict[str, tuple[int, int]] = {}   # node -> (seq, inode) of the consumed segment left in place
        self._behind = True
        self.rewinds: Counter[str] = Counter()
        self.on_revoke = None  # one spool, one consumer: nothing is ever revoked

    async def start(self, positions: Callable[[], dict[str, int]]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._next = positions()
        self._committed = dict(self._next)
        for node, next_offset in self._next.items():
            kept = self.dir / node / segment_name(next_offset - 1)
            try:
                self._kept[node] = (next_offset - 1, os.stat(kept).st_ino)
            except OSError:
                pass

    def _rewound(self, node: str, segments: list[tuple[int, Path]]) -> int | None:
        committed = self._committed.get(node, 0)
        kept = self._kept.get(node)
        back = []
        for seq, path in segments:
            if seq >= committed:
                break
            if kept is not None and kept[0] == seq:
                try:
                    if os.stat(path).st_ino == kept[1]:
                        continue
                except OSError:
                    continue
            back.append(seq)
        return min(back) if back else None

    def _pending(self) -> list[tuple[str, int, Path]]:
        out = []
        for node_dir in sorted(p for p in self.dir.iterdir() if p.is_dir()):
            node = node_dir.name
            segments = list_segments(node_dir)
            back = self._rewound(node, segments)
            if back is not None:
                log.warning("spool sequence went back: reading the segments again (a restored backup, a "
                            "renumbered shipper or a crash before consumed segments were removed); records "
                            "already stored are dropped as duplicates",
                            extra={"node": node, "from": self._committed.get(node, 0), "to": back})
                self.rewinds[node] += 1
                self._next[node] = self._committed[node] = back
                self._kept.pop(node, None)
            start = self._next.get(node, 0)
            out += [(node, seq, path) for seq, path in segments if seq >= start]
        return out

    async def poll(self, timeout: float) -> list[Message]:
        pending = (await asyncio.to_thread(self._pending))[:self.max_segments]
        self._behind = bool(pending)
        if not pending:
            await asyncio.sleep(timeout)
            return []
        out = []
        for node, seq, path in pending:
            try:
                value = await asyncio.to_thread(path.read_bytes)
            except FileNotFoundError:  # removed under us (a wiped spool): what follows is read next time
                break
            out.append(Message(node, seq, value))
            self._next[node] = seq + 1
        return out

    def caught_up(self) -> bool:
        return not self._behind

    async def commit(self, partition: str, next_offset: int) -> None:
        segments = list_segments(self.dir / partition)
        for seq, path in segments[:-1]:
            if seq < next_offset:
                path.unlink(missing_ok=True)
        self._committed[partition] = next_offset
        if segments and segments[-1][0] < next_offset:
            try:
                self._kept[partition] = (segments[-1][0], os.stat(segments[-1][1]).st_ino)
            except OSError:
                self._kept.pop(partition, None)

    async def close(self) -> None:
        return None
