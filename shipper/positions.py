"""Where each source's content stands: the one owner of every position the shipper keeps.

A source's content is at one of four places, furthest first when a file is opened again:

- read but not yet acknowledged, its file closed since (``release``: closed while idle, or finished);
- safe in the disk buffer from an earlier run (``resume``), unless a damaged buffer segment was moved
  aside: its lines are then read again from the checkpoint, so no later segment's position may let
  reading skip them (the lake drops what it already has);
- acknowledged, in the checkpoint file (shipper.checkpoint);
- a version-1 checkpoint's offset, taken over once (``legacy``).

Delivery tells this class when a batch takes its place in the queue (``queued``) and when it leaves
the head acknowledged (``delivered``): only then does a checkpoint move, and a source's entry is
neither pruned nor forgotten while a batch of it is still queued.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

from shipper import identity
from shipper.buffer import Marks
from shipper.checkpoint import STALE_AFTER_S, Checkpoints
from shipper.identity import Position


class Positions:
    def __init__(self, path: Path) -> None:
        self.checkpoints = Checkpoints(path)
        self._resume: dict[str, Position] = {}
        self._released: dict[str, Position] = {}
        self._deleted: list[str] = []          # sources whose entry goes once their last batch is delivered
        self._queued: Counter[str] = Counter()  # source -> batches in the delivery queue

    @property
    def created_at(self) -> float:
        """When this shipper's history began (see shipper.checkpoint)."""
        return self.checkpoints.created_at

    @property
    def stale_before(self) -> float:
        """A rotated file with no position is read from 0 only if written after this (wall clock)."""
        return max(self.checkpoints.created_at, time.time() - STALE_AFTER_S)

    def paths(self) -> set[str]:
        """Every path a saved position names (looked at once at start, for rotations while down)."""
        return self.checkpoints.paths()

    # delivery's side ----------------------------------------------------------

    def queued(self, marks: Marks) -> None:
        self._queued.update(marks.keys())

    def delivered(self, marks: Marks) -> None:
        """The batch holding ``marks`` and every batch before it are acknowledged: the checkpoint moves."""
        for source_id, (path, pos) in marks.items():
            self.checkpoints.advance(source_id, path, pos)
            self._queued[source_id] -= 1
            if self._queued[source_id] <= 0:
                del self._queued[source_id]

    def resume(self, buffered: dict[str, Position]) -> None:
        self._resume = dict(buffered)

    # the agent's side ---------------------------------------------------------

    def known(self, sid: str) -> Position | None:
        """The furthest position of content ``sid``: read but not yet confirmed, buffered, or checkpointed."""
        found = [p for p in (self._released.get(sid), self._resume.get(sid), self.checkpoints.position(sid)) if p]
        return max(found, key=lambda p: p.offset) if found else None

    def release(self, sid: str, pos: Position) -> None:
        """The file reading ``sid`` was closed at ``pos``: a copy of it found later resumes there."""
        self._released[sid] = pos

    def deleted(self, sid: str) -> None:
        """The file reading ``sid`` was deleted: its entry goes once its last batch is delivered."""
        self._deleted.append(sid)
        self._released.pop(sid, None)

    def legacy(self, node: str, fd: int) -> Position | None:
        """A position saved by a version-1 checkpoint, taken over once."""
        if not self.checkpoints.legacy:
            return None
        entry = self.checkpoints.legacy.pop(identity.legacy_id(node, fd) or "", None)
        if entry is None or entry[1] > os.fstat(fd).st_size:
            return None
        return Position(entry[1], identity.window(fd, entry[1]))

    def save(self, followed: set[str]) -> None:
        """Save the checkpoint; ``followed`` are the sources still read (open, or closed while idle), whose
        entries must not go stale. OSError (a full disk) leaves it to the next save."""
        for sid in [s for s in self._deleted if s not in self._queued]:
            self.checkpoints.forget(sid)
            self._deleted.remove(sid)
        self.checkpoints.prune(followed | set(self._queued))
        for sid, pos in list(self._released.items()):
            saved = self.checkpoints.position(sid)
            if saved is not None and saved.offset >= pos.offset:
                del self._released[sid]   # the checkpoint knows as much
        self.checkpoints.save()
