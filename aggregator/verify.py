"""Do the catalog and storage agree? Every listed file exists with its recorded sha256,
and no file sits in a tier directory that the catalog does not list."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from aggregator import duck
from aggregator.catalog import TIERS, Catalog
from aggregator.storage import Storage, digest


@dataclass(frozen=True)
class Finding:
    kind: str      # missing | altered | unlisted
    tier: str
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.tier} {self.path}: {self.detail}"


def check_files(catalog: Catalog, storage: Storage) -> tuple[int, list[Finding]]:
    """(files checked, findings)."""
    con = duck.connect()
    storage.configure(con)
    findings = []
    files = catalog.files()
    for f in files:
        where = storage.location(f.tier, f.path)
        try:
            size, sha = digest(where, con)
        except (OSError, duckdb.Error):
            findings.append(Finding("missing", f.tier, f.path, f"listed in the catalog but not readable at {where}"))
            continue
        if sha != f.sha256 or size != f.bytes:
            findings.append(Finding("altered", f.tier, f.path, f"sha256 {sha} ({size} bytes) differs from the "
                                                              f"catalog's {f.sha256} ({f.bytes} bytes)"))
    listed = {f.path for f in files} | {p for _, p in catalog.pending_deletes()}
    for tier in TIERS:
        for rel in storage.local_files(tier):
            if rel not in listed:
                findings.append(Finding("unlisted", tier, rel, "on storage but not in the catalog (left by an "
                                                               "interrupted write; removed at the next start)"))
    return len(files), findings
