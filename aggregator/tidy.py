"""Removing what no catalog entry needs: replaced files whose grace period is over, and files
an interrupted write left behind."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from lake.catalog.base import Catalog
from lake.catalog.model import Tier
from lake.storage import Storage

log = logging.getLogger("loglake.aggregator")


def tidy(catalog: Catalog, storage: Storage, tiers: Iterable[Tier]) -> int:
    """Delete replaced files that are due, and files of ``tiers`` the catalog never listed. Call under
    ``storage.exclusive()``; only name tiers no other process is writing."""
    due = catalog.pending_deletes(time.time_ns())
    for tier, path in due:
        storage.unlink(tier, path)
    catalog.forget_pending(due)
    listed = {f.path for f in catalog.files()} | {p for _, p in catalog.pending_deletes()}
    orphans = [(t, rel) for t in tiers for rel in storage.local_files(t) if rel not in listed]
    for tier, rel in orphans:
        storage.unlink(tier, rel)
    if orphans:
        log.warning("removed files an interrupted write left behind", extra={"files": len(orphans)})
    return len(due) + len(orphans)
