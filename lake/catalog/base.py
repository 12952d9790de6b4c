"""The catalog interface: every stored file, every consumed position, the trace and needle indexes.

The catalog is the single truth about what is stored. A file's entry and the
position after the last offset it holds are committed together, so after any
crash the catalog says exactly which records are stored and where consumption
resumes. Compaction swaps input entries for output entries in one transaction,
so a reader planning from the catalog sees each record exactly once. Files a
transaction removed stay on storage for a grace period (``pending`` deletes):
queries planned just before the swap can still read them.

``SqliteCatalog`` (lake.catalog.sqlite) is the default; a server database
for several aggregators implements the same ``Catalog`` protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from lake.catalog.model import FileEntry, Mark, NewFile, Tier
from lake.config import AggregatorConfig
from schemas.wire import Extent

if TYPE_CHECKING:
    from lake.holds import Hold
    from lake.selector import Selector


class Catalog(Protocol):
    def close(self) -> None: ...

    # consumption -----------------------------------------------------------
    def positions(self, topic: str) -> dict[str, int]: ...
    def source_marks(self, topic: str) -> dict[str, dict[Mark, int]]: ...
    def commit(self, new: NewFile | None, topic: str, partition: str, next_offset: int,
               marks: dict[Mark, int] | None = None, extents: Sequence[Extent] = ()) -> None:
        """Record a file (if any), the position after it, the partition's moved dedup marks and the
        source lengths its batches reported, atomically."""
    def source_extents(self) -> list[tuple[str, str, int, bool]]:
        """(source_id, path, length, sealed): how long each source is known to be."""

    # files -----------------------------------------------------------------
    def files(self, tier: Tier | None = None, since_ns: int | None = None,
              until_ns: int | None = None) -> list[FileEntry]:
        """Files of a tier (or all), those whose time range overlaps [since_ns, until_ns) if given."""
    def totals(self) -> tuple[int, int]:
        """(files, row groups) in the catalog."""
    def replace(self, removed: Sequence[FileEntry], added: Sequence[NewFile], delete_at_ns: int,
                deleted: Sequence[tuple[str, int, int, str]] = (), audit_seq: int = 0) -> None:
        """Swap ``removed`` for ``added`` atomically; removed files become pending deletes due at
        ``delete_at_ns``. Raises CatalogConflictError, changing nothing, if an active hold covers a
        removed file (placed after the job was planned). ``deleted`` lists the byte ranges of records policy removed in the swap."""
    def pending_deletes(self, due_by_ns: int | None = None) -> list[tuple[Tier, str]]:
        """(tier, path) of removed files still on storage, those due by ``due_by_ns`` if given."""
    def forget_pending(self, paths: Sequence[tuple[Tier, str]]) -> None: ...
    def trace_files(self, trace_key: int) -> list[tuple[FileEntry, int, int]]:
        """Files that hold a trace, with the first row group and the mask from it of each (lake.trace_index)."""
    def needle_filters(self, paths: Sequence[str]) -> dict[str, tuple[str, int]]:
        """(salt, blocks per row group) of each of ``paths`` written with a needle index."""
    def needle_blocks(self, wanted: Sequence[tuple[str, int]]) -> dict[tuple[str, int], tuple[bytes, bytes]]:
        """(bits, seal) of the needle index rows (path, block) asked for that exist (lake.needle_index)."""

    # compliance: holds, ranges deleted by policy, the audit log's head ----
    def add_hold(self, selector: Selector, reason: str, by: str) -> int: ...
    def holds(self, include_released: bool = False) -> list[Hold]: ...
    def release_hold(self, hold_id: int, by: str, reason: str) -> Hold | None: ...
    def deleted_ranges(self) -> list[tuple[str, int, int, str]]: ...
    def add_pending_erasure(self, selector: Selector, reason: str, audit_seq: int) -> int:
        """Remember an erasure a legal hold kept from finishing, to finish once no hold is in the way."""
    def pending_erasures(self) -> list[tuple[int, Selector, str]]: ...
    def finish_erasure(self, erasure_id: int) -> None: ...
    def audit_head(self) -> tuple[int, str] | None: ...
    def set_audit_head(self, seq: int, digest: str) -> None: ...
    def audit_key(self) -> str | None:
        """The fingerprint of the public key the audit trail is signed with (pinned at first use)."""
    def set_audit_key(self, fingerprint: str) -> None: ...
    def audit_evidence(self) -> int:
        """How many rows (holds, deletions, destroyed or retired keys) were made with an audit entry:
        a lake with any has a trail, and a missing one was removed."""

    # data keys (lake.keys wraps and unwraps; the catalog only stores) ---
    def live_data_key(self, scope: str) -> tuple[str] | None: ...
    def add_data_key(self, key_id: str, scope: str, wrapped: bytes, master_id: str) -> None: ...
    def data_key(self, key_id: str) -> tuple[bytes, int | None] | None: ...
    def live_data_keys(self) -> list[tuple[str, bytes]]: ...
    def data_key_list(self) -> list[tuple[str, str, str, bool]]: ...
    def rewrap_data_keys(self, wrapped: dict[str, bytes], master_id: str) -> None: ...
    def destroy_data_key(self, key_id: str) -> None: ...
    def retire_data_keys(self, key_ids: Sequence[str], why: str) -> None:
        """Mark keys to be destroyed as soon as no file needs them (records they encrypted were deleted,
        but a held file still uses them); a retired key is never used for new writes."""
    def retired_data_keys(self) -> dict[str, str]:
        """Retired keys not destroyed yet, with why."""

    # integrity ---------------------------------------------------------------
    def malformed(self, limit: int = 100) -> list[str]:
        """Every value (up to ``limit``) that is not what loglake writes there, one sentence each naming
        the row and the value; the other methods raise CatalogValueError at the first they read."""


def open_catalog(cfg: AggregatorConfig) -> Catalog:
    from lake.catalog.sqlite import SqliteCatalog
    return SqliteCatalog(cfg.catalog_path)
