"""Is everything there, unaltered, and accounted for?

- files: every listed file exists with its recorded size and sha256, and no file
  sits in a tier directory that the catalog does not list;
- completeness: for every source file, the byte ranges no stored record covers
  and no deletion by policy explains (the proof nothing was lost in transit).

The audit trail's own check is aggregator.audit.AuditLog.verify.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from aggregator import duck
from aggregator.catalog import TIERS, Catalog
from aggregator.keys import DataKey, KeyRing
from aggregator.storage import Storage, digest
from schemas.record import FLAG_TRUNCATED


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


@dataclass(frozen=True)
class Gap:
    source_id: str
    path: str | None
    start: int
    end: int
    kind: str      # missing | truncated (after a record the shipper flagged truncated)

    def __str__(self) -> str:
        return f"{self.kind}: {self.source_id} ({self.path or '?'}) bytes [{self.start}, {self.end})"


def gaps(catalog: Catalog, storage: Storage, keyring: KeyRing, skip: set[str] = frozenset()) -> tuple[int, list[Gap]]:
    """(sources checked, gaps): per source file, byte ranges that no stored record covers and no
    deletion by policy explains. Every record carries [source_offset, source_end) of its source.
    Files in ``skip`` (missing or altered) are left out; their records then show as gaps."""
    con = duck.connect()
    storage.configure(con)
    files: dict[DataKey, list[str]] = defaultdict(list)
    for f in catalog.files():
        if f.path in skip:
            continue
        files[keyring.get(f.key_id)].append(storage.location(f.tier, f.path))
    scan = duck.scan_sql(duck.KeyRegistry(con), files)
    schema = pa.schema([("source_id", pa.string()), ("start", pa.int64()), ("end", pa.int64()),
                        ("why", pa.string())])
    deleted = pa.Table.from_pylist([dict(zip(schema.names, r)) for r in catalog.deleted_ranges()], schema=schema)
    con.register("deleted", deleted)
    stored = (f"SELECT source_id, source_path, source_offset AS s, source_end AS e, "
              f"(flags & {FLAG_TRUNCATED}) <> 0 AS cut FROM ({scan})" if scan else
              "SELECT NULL::VARCHAR AS source_id, NULL::VARCHAR AS source_path, 0::BIGINT AS s, 0::BIGINT AS e, "
              "false AS cut WHERE false")
    rows = con.execute(f"""
        WITH r AS ({stored} UNION ALL SELECT source_id, NULL, start, "end", false FROM deleted),
        o AS (SELECT *, max(e) OVER w AS prev_end, lag(cut) OVER w2 AS prev_cut FROM r
              WINDOW w AS (PARTITION BY source_id ORDER BY s, e ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                     w2 AS (PARTITION BY source_id ORDER BY s, e))
        SELECT source_id, source_path, coalesce(prev_end, 0), s, coalesce(prev_cut, false) FROM o
        WHERE s > coalesce(prev_end, 0) ORDER BY 1, 3""").fetchall()
    sources = con.execute("SELECT count(DISTINCT source_id) FROM (SELECT source_id FROM deleted"
                          + (f" UNION ALL SELECT source_id FROM ({scan})" if scan else "") + ")").fetchone()[0]
    return sources, [Gap(sid, path, a, b, "truncated" if cut else "missing") for sid, path, a, b, cut in rows]
