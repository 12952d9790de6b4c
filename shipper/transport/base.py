"""The transport interface the agent sees."""

from __future__ import annotations

import asyncio
from typing import Protocol


class Transport(Protocol):
    name: str

    async def start(self) -> None:
        """Connect; raise TransportError with a clear sentence if that is impossible."""

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        """Hand one batch over. The returned future completes when the batch is
        acknowledged (durable at the other end) and fails if it was not."""

    async def reset(self) -> None:
        """Start afresh after failed sends (before the disk buffer is replayed)."""

    async def close(self) -> None:
        """Flush what was handed over and disconnect."""
