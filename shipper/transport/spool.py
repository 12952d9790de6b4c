"""Spool transport: batches as segment files in ``<spool dir>/<node>/``.

A segment is acknowledged once it is durable (fsync + rename + directory fsync);
a write that fails (a full disk) is a TransportError like a broker outage, so
the batch waits in the shipper and is written again later under the same number.

Sequence numbers never go backwards, whatever happens to the spool: they go on
after the highest of (the newest segment present, the lease in the shipper's
own ``<data_dir>/spool-seq``). The lease is a number not used yet, moved
``LEASE`` ahead durably before it is reached, so a wiped or restored spool
directory cannot make numbers repeat. A shipper that has lost its own state as
well starts at the current time in microseconds, above anything an earlier
life of it could have reached (it would need a million batches a second).

The spool directory and the node's directory in it must be private (see
runtime.durable.require_private_dir): anyone who may write there can plant
segments, or links at the names segments are written to. Both are created
owner-only; a writable one is refused with a ConfigError. Segments are written
with runtime.durable.write_durably, which never writes through a planted link.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

from runtime.durable import require_private_dir, safe_name, write_durably
from runtime.errors import TransportError
from runtime.transport import SpoolSettings
from schemas.spool import list_segments, segment_name

LEASE = 4096
_LEASE_MAX_BYTES = 64  # a decimal number; anything longer is not a lease


def _read_lease(path: Path) -> int | None:
    """The lease in ``path``; None if there is none. Read without following a link or waiting on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise TransportError(f"cannot read {path}: {e.strerror}; remove it if it is not a regular file "
                             "(sequence numbers then start at the current time)") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TransportError(f"{path} is not a regular file; remove it (sequence numbers then start at "
                                 "the current time)")
        text = os.read(fd, _LEASE_MAX_BYTES + 1)
    finally:
        os.close(fd)
    try:
        if len(text) > _LEASE_MAX_BYTES:
            raise ValueError
        return int(text)
    except ValueError:
        raise TransportError(f"{path} does not hold a number; remove it (sequence numbers "
                             "then start at the current time)") from None


class SpoolTransport:
    name = "spool"

    def __init__(self, settings: SpoolSettings, node: str, data_dir: Path) -> None:
        self.root = settings.dir
        self.dir = settings.dir / safe_name(node)
        self.lease_path = data_dir / "spool-seq"
        self._next = 0
        self._lease = 0
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        require_private_dir(self.root, "spool directory")  # ConfigError: a person must fix it
        require_private_dir(self.dir, "spool directory of this node")
        segments = list_segments(self.dir)
        leased = _read_lease(self.lease_path)
        if leased is None:
            leased = time.time_ns() // 1000
        self._next = max(segments[-1][0] + 1 if segments else 0, leased)
        self._lease = self._next

    def _write(self, seq: int, value: bytes) -> None:
        if seq >= self._lease:
            write_durably(self.lease_path, str(seq + LEASE).encode())
            self._lease = seq + LEASE
        write_durably(self.dir / segment_name(seq), value, 0o640)

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        # Segments must land in sequence order: one write at a time.
        async with self._lock:
            try:
                await asyncio.to_thread(self._write, self._next, value)
            except OSError as e:
                raise TransportError(f"cannot write spool segment in {self.dir}: {e.strerror}") from None
            self._next += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def reset(self) -> None:
        return None

    async def close(self) -> None:
        return None
