"""Is everything there, unaltered, and accounted for?

- files: every listed file exists with its recorded size and sha256, its data
  key can be opened, and no file sits in a tier directory that the catalog does
  not list;
- completeness: for every source file, the byte ranges no stored record covers
  and no deletion by policy explains, up to the length its shipper reported
  (the proof nothing was lost in transit, tails included: a source the shipper
  sealed and the lake never saw is one gap from 0);
- duplicates: records stored more than once, under the same id or under another
  id of the same content (same container, stream, offset, time and body).

The audit trail's own check is lake.audit.AuditLog.verify.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from aggregator import config
from aggregator.retention import Remover
from lake import duck
from lake.audit import AuditLog
from lake.catalog.base import Catalog
from lake.catalog.model import TIERS
from lake.keys import KeyRing
from lake.storage import Storage, digest
from runtime.errors import EncryptionKeyError
from runtime.progress import QUIET, Progress
from schemas.record import FLAG_TRUNCATED


@dataclass(frozen=True)
class Finding:
    kind: str      # missing | altered | unlisted | unreadable | malformed
    tier: str      # a Tier, or "catalog"
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.tier} {self.path}: {self.detail}"


def check_files(catalog: Catalog, storage: Storage, progress: Progress = QUIET) -> tuple[int, list[Finding]]:
    """(files checked, findings)."""
    con = duck.connect()
    storage.configure(con)
    findings = []
    files = catalog.files()
    with progress.phase("verify: files", len(files), sum(f.bytes for f in files)) as step:
        for f in files:
            where = storage.location(f.tier, f.path)
            try:
                size, sha = digest(where, con)
            except (OSError, duck.Error):
                findings.append(Finding("missing", f.tier, f.path,
                                        f"listed in the catalog but not readable at {where}"))
            else:
                if sha != f.sha256 or size != f.bytes:
                    findings.append(Finding("altered", f.tier, f.path, f"sha256 {sha} ({size} bytes) differs "
                                                                      f"from the catalog's {f.sha256} ({f.bytes} bytes)"))
            step(f.bytes)
    listed = {f.path for f in files} | {p for _, p in catalog.pending_deletes()}
    for tier in TIERS:
        for rel in storage.local_files(tier):
            if rel not in listed:
                findings.append(Finding("unlisted", tier, rel, "on storage but not in the catalog (left by an "
                                                               "interrupted write; removed at the next start)"))
    return len(files), findings


def check_keys(catalog: Catalog, keyring: KeyRing) -> list[Finding]:
    """Listed files whose data key cannot be opened (destroyed, or not in the catalog)."""
    findings: list[Finding] = []
    bad: dict[str, str | None] = {}
    for f in catalog.files():
        if f.key_id not in bad:
            try:
                keyring.get(f.key_id)
                bad[f.key_id] = None
            except EncryptionKeyError as e:
                bad[f.key_id] = str(e)
        if bad[f.key_id]:
            findings.append(Finding("unreadable", f.tier, f.path, f"{bad[f.key_id]} ({f.rows} records)"))
    return findings


@dataclass(frozen=True)
class Gap:
    source_id: str
    path: str | None
    start: int
    end: int
    kind: str      # missing | truncated (after a record the shipper flagged truncated)

    def __str__(self) -> str:
        return f"{self.kind}: {self.source_id} ({self.path or '?'}) bytes [{self.start}, {self.end})"


@dataclass(frozen=True)
class Duplicate:
    source_ids: tuple[str, ...]
    path: str
    offset: int
    copies: int

    def __str__(self) -> str:
        ids = self.source_ids[0] if len(self.source_ids) == 1 else f"{len(self.source_ids)} ids ({', '.join(self.source_ids)})"
        return f"duplicate: {ids} ({self.path}) record at byte {self.offset} stored {self.copies} times"


def _stored(catalog: Catalog, storage: Storage, keyring: KeyRing,
            skip: Set[str]) -> tuple[duck.Connection, str | None]:
    """A connection and the SQL of every stored record (None: nothing stored); ``skip`` files left out."""
    # One thread: DuckDB 1.5.5's parallel window operator fails now and then with "INTERNAL Error: Attempted
    # to access index 0 within vector of size 0" (duckdb#22352); the completeness and duplicate queries
    # failed 3 times in 300 runs with the default threads, 0 in 600 with one. A check must not crash.
    con = duck.connect(threads=1)
    storage.configure(con)
    files = keyring.by_key((f for f in catalog.files() if f.path not in skip), storage.location)
    return con, duck.scan_sql(duck.KeyRegistry(con), files) or None


def gaps(catalog: Catalog, storage: Storage, keyring: KeyRing, skip: Set[str] = frozenset()) -> tuple[int, list[Gap]]:
    """(sources checked, gaps): per source file, byte ranges that no stored record covers and no
    deletion by policy explains, up to the source's reported length. Every record carries
    [source_offset, source_end) of its source. Files in ``skip`` (missing or altered) are left out;
    their records then show as gaps."""
    con, scan = _stored(catalog, storage, keyring, skip)
    schema = pa.schema([("source_id", pa.string()), ("start", pa.int64()), ("end", pa.int64()),
                        ("why", pa.string())])
    deleted = pa.Table.from_pylist([dict(zip(schema.names, r)) for r in catalog.deleted_ranges()], schema=schema)
    con.register("deleted", deleted)
    extents = pa.Table.from_pylist([{"source_id": sid, "path": p, "length": n} for sid, p, n, _ in
                                    catalog.source_extents()],
                                   schema=pa.schema([("source_id", pa.string()), ("path", pa.string()),
                                                     ("length", pa.int64())]))
    con.register("extents", extents)
    stored = (f"SELECT source_id, source_path, source_offset AS s, source_end AS e, "
              f"(flags & {FLAG_TRUNCATED}) <> 0 AS cut FROM ({scan})" if scan else
              "SELECT NULL::VARCHAR AS source_id, NULL::VARCHAR AS source_path, 0::BIGINT AS s, 0::BIGINT AS e, "
              "false AS cut WHERE false")
    # A source's reported length is an empty range at its end: the bytes before it must be covered.
    rows = con.execute(f"""
        WITH r AS ({stored} UNION ALL SELECT source_id, NULL, start, "end", false FROM deleted
                   UNION ALL SELECT source_id, path, length, length, false FROM extents),
        o AS (SELECT *, max(e) OVER w AS prev_end, lag(cut) OVER w2 AS prev_cut FROM r
              WINDOW w AS (PARTITION BY source_id ORDER BY s, e ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                     w2 AS (PARTITION BY source_id ORDER BY s, e))
        SELECT source_id, source_path, coalesce(prev_end, 0), s, coalesce(prev_cut, false) FROM o
        WHERE s > coalesce(prev_end, 0) ORDER BY 1, 3""").fetchall()
    sources = con.execute("SELECT count(DISTINCT source_id) FROM (SELECT source_id FROM deleted "
                          "UNION ALL SELECT source_id FROM extents"
                          + (f" UNION ALL SELECT source_id FROM ({scan})" if scan else "") + ")").fetchone()[0]  # type: ignore[index]
    return sources, [Gap(sid, path, a, b, "truncated" if cut else "missing") for sid, path, a, b, cut in rows]


def duplicates(catalog: Catalog, storage: Storage, keyring: KeyRing,
               skip: Set[str] = frozenset(), limit: int = 1000) -> tuple[int, list[Duplicate]]:
    """(records stored more than once, the first ``limit`` of them): the same record id twice, or the
    same content at the same offset of the same container under two ids (a file read again as another)."""
    con, scan = _stored(catalog, storage, keyring, skip)
    if scan is None:
        return 0, []
    rows = con.execute(f"""
        WITH r AS (SELECT source_id, source_path, source_offset, hash(node, namespace, pod, container, stream,
                                                                      observed_time, body) AS h FROM ({scan})),
        same_id AS (SELECT [source_id] AS ids, any_value(source_path) AS path, source_offset, count(*) AS n
                    FROM r GROUP BY source_id, source_offset HAVING count(*) > 1),
        other_id AS (SELECT list(DISTINCT source_id ORDER BY source_id) AS ids, any_value(source_path) AS path,
                            source_offset, count(*) AS n
                     FROM r GROUP BY h, source_offset HAVING count(DISTINCT source_id) > 1),
        d AS (SELECT * FROM same_id UNION ALL SELECT * FROM other_id)
        SELECT ids, path, source_offset, n, sum(n - 1) OVER () FROM d ORDER BY ids, source_offset LIMIT {limit}
        """).fetchall()
    extra = int(rows[0][4]) if rows else 0
    return extra, [Duplicate(tuple(ids), path, off, n) for ids, path, off, n, _ in rows]


@dataclass
class Verification:
    files_checked: int
    file_problems: list[Finding]
    audit_entries: int
    audit_problems: list[str]
    sources: int
    gaps: list[Gap]
    duplicated: int = 0
    duplicates: list[Duplicate] = field(default_factory=list)

    @property
    def missing(self) -> list[Gap]:
        return [g for g in self.gaps if g.kind == "missing"]

    @property
    def ok(self) -> bool:
        return not (self.file_problems or self.audit_problems or self.missing or self.duplicated)

    def lines(self) -> list[str]:
        truncated = [g for g in self.gaps if g.kind == "truncated"]
        out = [f"files: {self.files_checked} checked, {len(self.file_problems)} problems"]
        out += [f"  {p}" for p in self.file_problems]
        out.append(f"audit trail: {self.audit_entries} entries checked, {len(self.audit_problems)} problems")
        out += [f"  {p}" for p in self.audit_problems]
        out.append(f"completeness: {self.sources} source files, {len(self.missing)} gaps "
                   f"({sum(g.end - g.start for g in self.missing)} bytes never stored), "
                   f"{len(truncated)} truncated lines ({sum(g.end - g.start for g in truncated)} bytes cut "
                   "by the shipper, flagged)")
        out += [f"  {g}" for g in self.gaps[:200]]
        if len(self.gaps) > 200:
            out.append(f"  … and {len(self.gaps) - 200} more")
        out.append(f"duplicates: {self.duplicated} records stored more than once")
        out += [f"  {d}" for d in self.duplicates[:200]]
        if self.duplicated and len(self.duplicates) < self.duplicated:
            out.append(f"  … {len(self.duplicates)} shown")
        out.append("verify: OK" if self.ok else "verify: FAILED")
        return out

    def summary(self) -> dict[str, Any]:
        return {"ok": self.ok, "files_checked": self.files_checked,
                "file_problems": [str(p) for p in self.file_problems], "audit_entries": self.audit_entries,
                "audit_problems": self.audit_problems, "sources": self.sources,
                "missing_bytes": sum(g.end - g.start for g in self.missing),
                "gaps": [g.__dict__ for g in self.gaps], "duplicated": self.duplicated,
                "duplicates": [str(d) for d in self.duplicates]}


def verification(settings: config.Settings, catalog: Catalog, remover: Remover) -> Verification:
    storage = Storage(settings.aggregator, settings.tiers)
    checked, problems = check_files(catalog, storage, remover.progress)
    problems += check_keys(catalog, remover.keyring)
    entries, audit_problems = AuditLog.of(settings.aggregator, catalog).verify()
    unreadable = {p.path for p in problems if p.kind in ("missing", "altered", "unreadable")}
    # one query each over every stored record: the bar shows which is running and for how long
    with remover.progress.phase("verify: completeness, duplicates", 2) as step:
        sources, found = gaps(catalog, storage, remover.keyring, unreadable)
        step(0)
        duplicated, twice = duplicates(catalog, storage, remover.keyring, unreadable)
        step(0)
    return Verification(checked, problems, entries, [str(p) for p in audit_problems], sources, found,
                        duplicated, twice)
