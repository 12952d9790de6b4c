"""Legal holds: selectors whose records retention and erasure must never delete, rewrite or shred.

A hold protects whole files: a file that may hold a held record (by its
catalog entry: containers and time range) is left byte-for-byte as it is, so
its sha256 in the catalog, in exports and in the audit trail stays valid for
the investigation. Records beside held ones in such a file stay too, until the
hold is released; reports say what each hold kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from lake.catalog.model import FileEntry
from lake.selector import Selector, format_time


@dataclass(frozen=True)
class Hold:
    id: int
    selector: Selector
    reason: str
    created_at: int
    created_by: str
    released_at: int | None = None
    released_by: str | None = None
    release_reason: str | None = None

    def covers(self, f: FileEntry) -> bool:
        return self.selector.may_match(f.namespaces, f.containers, f.min_time, f.max_time)

    def describe(self) -> str:
        state = (f"released {format_time(self.released_at)} by {self.released_by}: {self.release_reason}"
                 if self.released_at else "active")
        return (f"hold {self.id}: {self.selector.describe()} — {self.reason!r} "
                f"(placed {format_time(self.created_at)} by {self.created_by}; {state})")


def holding(holds: list[Hold], f: FileEntry) -> list[Hold]:
    """The active holds that cover a file."""
    return [h for h in holds if h.released_at is None and h.covers(f)]
