"""The shipper's loop: find files, read them, batch, send, checkpoint after acks."""

from __future__ import annotations

import asyncio
import fnmatch
import glob
import logging
import os
import time
from collections import deque
from dataclasses import dataclass

from schemas import wire
from schemas.errors import TransportError
from shipper.batch import Batch, Batcher
from shipper.checkpoint import Checkpoints
from shipper.config import Settings
from shipper.enrich import K8sMeta, from_path
from shipper.fingerprint import FileId, identify
from shipper.records import RecordBuilder, detect_format
from shipper.tail import FileTail
from shipper.transport.base import Transport

log = logging.getLogger("loglake.shipper")


@dataclass
class Source:
    path: str
    fid: FileId
    source_id: str
    key: bytes
    tail: FileTail
    builder: RecordBuilder
    at_eof: bool = False


def container_key(meta: K8sMeta, path: str) -> bytes:
    if meta.namespace and meta.pod and meta.container:
        return f"{meta.namespace}/{meta.pod}/{meta.container}".encode()
    return path.encode()


class Agent:
    def __init__(self, settings: Settings, transport: Transport) -> None:
        self.cfg = settings.shipper
        self.transport = transport
        self.checkpoints = Checkpoints(self.cfg.data_dir / "checkpoints.json")
        self.batcher = Batcher(self.cfg.batch_max_bytes, self.cfg.batch_max_wait_ms / 1000)
        self.sources: dict[str, Source] = {}
        self._inflight: deque[tuple[asyncio.Future[None], Batch]] = deque()
        self._stopping = asyncio.Event()
        self.stats = {"lines_read": 0, "bytes_read": 0, "records_shipped": 0, "batches_acked": 0}

    def stop(self) -> None:
        self._stopping.set()

    # discovery -----------------------------------------------------------------

    def _matching_paths(self) -> list[str]:
        paths = {p for pattern in self.cfg.include for p in glob.glob(str(pattern), recursive=True)}
        return sorted(p for p in paths
                      if not any(fnmatch.fnmatch(p, ex) for ex in self.cfg.exclude) and os.path.isfile(p))

    def discover(self) -> None:
        for path in self._matching_paths():
            if path in self.sources:
                continue
            try:
                tail = FileTail.open(path)
            except OSError as e:
                log.warning("cannot open log file", extra={"path": path, "error": str(e)})
                continue
            fid = identify(tail.fd)
            if fid is None:  # first line incomplete: no identity yet, try again later
                tail.close()
                continue
            source_id = fid.source_id(self.cfg.node_name)
            tail.offset = self.checkpoints.offset(source_id) or 0
            if tail.offset > tail.size():
                tail.offset = 0  # truncated since the checkpoint: read it anew
            first_line = os.pread(tail.fd, 4096, 0).split(b"\n", 1)[0]
            meta = from_path(path)
            builder = RecordBuilder(node=self.cfg.node_name, source_id=source_id, path=path, meta=meta,
                                    fmt=detect_format(first_line), max_record_bytes=self.cfg.max_record_bytes)
            self.sources[path] = Source(path, fid, source_id, container_key(meta, path), tail, builder)
            log.info("tailing file", extra={"path": path, "source_id": source_id, "offset": tail.offset,
                                            "format": builder.fmt})

    # reading -----------------------------------------------------------------

    def read_once(self) -> tuple[int, list[Batch]]:
        """One pass over every file; returns bytes read and batches that became full."""
        total, full = 0, []
        for src in self.sources.values():
            start = src.tail.offset
            chunk = src.tail.read(self.cfg.read_chunk_bytes, self.cfg.max_record_bytes)
            src.at_eof = chunk.at_eof
            read = chunk.end - start
            if read == 0:
                continue
            records = src.builder.build(chunk.lines, chunk.offsets, chunk.cut) if chunk.lines else []
            floor = src.builder.commit_floor()
            commit = chunk.end if floor is None else min(floor, chunk.end)
            total += read
            self.stats["lines_read"] += len(chunk.lines)
            self.stats["bytes_read"] += read
            full += self.batcher.add(src.key, records, src.source_id, src.path, commit)
        return total, full

    # sending -----------------------------------------------------------------

    async def send(self, batches: list[Batch]) -> None:
        for batch in batches:
            while len(self._inflight) >= self.cfg.max_inflight_batches:
                await self._settle(wait=True)
            if batch.records:
                value = wire.encode(self.cfg.node_name, batch.records, level=self.cfg.zstd_level)
                fut = await self.transport.send(batch.key, value)
            else:
                fut = asyncio.get_running_loop().create_future()
                fut.set_result(None)
            self._inflight.append((fut, batch))
        await self._settle(wait=False)

    async def _settle(self, wait: bool) -> None:
        """Apply acknowledgements in send order; a failed batch stops the agent
        before its position (or any later one) is saved."""
        if wait and self._inflight:
            await asyncio.wait([self._inflight[0][0]])
        while self._inflight and self._inflight[0][0].done():
            fut, batch = self._inflight.popleft()
            exc = fut.exception()
            if exc is not None:
                raise TransportError(f"batch for {batch.key.decode(errors='replace')} was not acknowledged: {exc}")
            for source_id, (path, offset) in batch.marks.items():
                self.checkpoints.advance(source_id, path, offset)
            if batch.records:
                self.stats["records_shipped"] += len(batch.records)
                self.stats["batches_acked"] += 1

    async def flush_all(self) -> None:
        await self.send(self.batcher.drain())
        while self._inflight:
            await self._settle(wait=True)
        self.checkpoints.save()

    # loop -----------------------------------------------------------------

    async def run(self, once: bool = False) -> None:
        poll = self.cfg.poll_interval_ms / 1000
        last_save = last_discover = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if now - last_discover >= poll:
                self.discover()
                last_discover = now
            read, full = self.read_once()
            await self.send(full + self.batcher.due())
            if time.monotonic() - last_save >= 1.0:
                self.checkpoints.save()
                last_save = time.monotonic()
            if once and read == 0 and all(s.at_eof for s in self.sources.values()):
                break
            if read == 0:
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=poll)
                except asyncio.TimeoutError:
                    pass
        await self.flush_all()
        for src in self.sources.values():
            src.tail.close()
        log.info("shipper stopped", extra=self.stats)
