"""What the aggregator consumes from, whatever the transport."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Message:
    partition: str
    offset: int
    value: bytes


class Source(Protocol):
    topic: str
    # Called with the partitions a rebalance takes away, before they go, so their
    # buffers are written and committed by this aggregator (Kafka only).
    on_revoke: Callable[[list[str]], Awaitable[None]] | None

    async def start(self, positions: Callable[[], dict[str, int]]) -> None:
        """Begin consuming. ``positions()`` reads the catalog's partition → next offset;
        it is asked again whenever partitions are (re)assigned, and always wins."""

    async def poll(self, timeout: float) -> list[Message]:
        """The next messages, in offset order per partition; [] after ``timeout`` seconds."""

    def caught_up(self) -> bool:
        """Nothing was left to read at the last poll (used by --once)."""

    def lag(self) -> dict[str, int]:
        """Batches per partition not yet committed: the transport's end minus the committed position
        (Kafka: offsets; spool: segments), for every partition this consumer reads."""

    def unavailable(self) -> str | None:
        """None while the transport answers; otherwise why not, in one sentence (readiness)."""

    async def commit(self, partition: str, next_offset: int) -> None:
        """Tell the transport the position is stored (the catalog already has it)."""

    async def close(self) -> None:
        ...
