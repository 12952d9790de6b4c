"""Retention and erasure: deleting what policy says must go, and proving it.

Both work the same way. A per-row SQL expression names why a record must go
(the retention rule that expired it, or ``erasure``) or is NULL. Each candidate
file (chosen from its catalog entry) is counted with it, then:

- a file under an active legal hold is left exactly as it is (reported as kept);
- a file whose every row goes is removed;
- a file where some rows go is rewritten without them;
- every key that ever encrypted a removed record (the file's own and, through
  its ``key_lineage``, the keys of the hot and warm files it was compacted
  from) must go: every other file still encrypted with one of them is
  re-encrypted, so the key is needed by no file and is **destroyed**
  (crypto-shredding): copies of the old files anywhere, backups taken before
  compaction included, can no longer be read. A key a held file still needs
  is *retired* instead (never used again, destroyed by the first run after the
  hold is released), and the result says so.

Retention goes by the later of the event time and the observed time, so a line
that claims to be old is kept as long as a line the runtime saw at the same
moment (the shipper bounds the claim; this bounds what a claim can do).

Rewrites use a new data key of the same scope. The catalog swaps old files for
new ones in one transaction that also records the byte ranges of every deleted
record (``deleted_ranges``), so ``verify`` can tell deletions by policy from
loss. Each run is in the audit trail twice: the plan when it starts, the result
when it ends.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aggregator.config import RetentionConfig, Settings
from aggregator.tidy import tidy
from aggregator.workspace import Workspace
from lake.audit import AuditLog
from lake.catalog.model import FileEntry, NewFile
from lake.holds import holding
from lake.keys import DataKey, MasterKey
from lake.selector import Selector, levels_sql, parse_levels
from runtime.errors import EncryptionKeyError
from runtime.progress import QUIET, Progress
from schemas.record import DAY_NS

WHY = "_loglake_why"


@dataclass
class Decision:
    entry: FileEntry
    by_reason: dict[str, int]
    held_by: tuple[int, ...]

    @property
    def rows(self) -> int:
        return sum(self.by_reason.values())

    @property
    def action(self) -> str:
        if not self.rows:
            return "keep"
        if self.held_by:
            return "held"
        return "delete" if self.rows == self.entry.rows else "rewrite"


@dataclass
class RemovalPlan:
    what: str                       # retention | erasure | key-destroy
    why_sql: str
    decisions: list[Decision]
    details: dict[str, Any] = field(default_factory=dict)
    selector: Selector | None = None   # erasure: what was asked for
    pending_id: int | None = None      # erasure: the pending request this run goes on with

    def summary(self) -> dict[str, Any]:
        reasons: dict[str, dict[str, int]] = defaultdict(lambda: {"files": 0, "rows": 0, "bytes": 0})
        held: dict[str, dict[str, int]] = defaultdict(lambda: {"files": 0, "rows": 0})
        actions: dict[str, int] = defaultdict(int)
        for d in self.decisions:
            actions[d.action] += 1
            for why, n in d.by_reason.items():
                if d.action == "held":
                    for h in d.held_by:
                        held[str(h)]["files"] += 1
                        held[str(h)]["rows"] += n
                    continue
                r = reasons[why]
                r["files"] += 1
                r["rows"] += n
                r["bytes"] += d.entry.bytes * n // max(d.entry.rows, 1)
        return {"what": self.what, **self.details, "by_reason": dict(reasons), "kept_by_hold": dict(held),
                "files": dict(actions)}

    def lines(self) -> list[str]:
        s = self.summary()
        out = [f"{self.what}: {s['files'].get('delete', 0)} files to delete, {s['files'].get('rewrite', 0)} to "
               f"rewrite, {s['files'].get('held', 0)} kept by legal holds"]
        for why, r in sorted(s["by_reason"].items()):
            out.append(f"  {why}: {r['rows']} rows in {r['files']} files, about {r['bytes']} bytes")
        for hold, r in sorted(s["kept_by_hold"].items()):
            out.append(f"  hold {hold} keeps {r['rows']} rows in {r['files']} files that policy would delete")
        return out


@dataclass(frozen=True)
class Removal:
    """What carrying out a plan did; ``record()`` is its entry in the audit trail and its JSON summary."""
    started_seq: int                # the audit entry that started it
    files_deleted: int
    files_rewritten: int
    files_reencrypted: int
    rows_deleted: int
    deleted_ranges: int
    keys_destroyed: list[str]
    keys_retired: list[str]         # doomed, but a held file (or one written meanwhile) still needs them
    kept_by_hold: dict[str, dict[str, int]]
    pending_erasure: int | None = None   # erasure: the request that stays pending while a hold keeps records

    def record(self) -> dict[str, Any]:
        out = {"status": "done", **dataclasses.asdict(self)}
        if self.pending_erasure is None:
            del out["pending_erasure"]
        return out


def retention_sql(cfg: RetentionConfig, now_ns: int) -> str:
    """The rule (most specific first) that expires each row, or NULL."""
    def expired(name: str, days: int) -> str:
        return f"CASE WHEN greatest(time, observed_time) < make_timestamp_ns({now_ns - days * DAY_NS}) THEN '{name}' END"
    whens = [f"WHEN {Selector(r.namespace, r.pod, r.container).sql()} AND "
             f"{levels_sql(parse_levels(r.level) if r.level else ())} THEN {expired(r.name, r.days)}"
             for r in cfg.ordered()]
    default = expired("default", cfg.default_days)
    return f"CASE {' '.join(whens)} ELSE {default} END" if whens else default


class Remover:
    def __init__(self, settings: Settings, ws: Workspace) -> None:
        self.settings = settings
        self.catalog, self.keyring, self.storage, self.writer = ws.catalog, ws.keyring, ws.storage, ws.writer
        self.audit = AuditLog.of(settings.aggregator, self.catalog)
        self.progress: Progress = QUIET  # a command on a terminal sets a visible one

    @classmethod
    def open(cls, settings: Settings, master: MasterKey) -> Remover:
        return cls(settings, Workspace.open(settings, master))

    def close(self) -> None:
        self.catalog.close()

    # planning --------------------------------------------------------------

    def retention_plan(self, now_ns: int | None = None) -> RemovalPlan:
        now = time.time_ns() if now_ns is None else now_ns
        cfg = self.settings.retention
        shortest = min([cfg.default_days, *(r.days for r in cfg.rules)])
        # min_time is the earliest event time, never later than the earliest observed one the rule goes by
        candidates = [f for f in self.catalog.files() if f.min_time < now - shortest * DAY_NS]
        return self._plan("retention", retention_sql(cfg, now), candidates,
                          {"now": now, "rules": [r.__dict__ for r in cfg.ordered()], "default_days": cfg.default_days})

    def erasure_plan(self, selector: Selector, reason: str) -> RemovalPlan:
        candidates = [f for f in self.catalog.files() if selector.may_match(f.namespaces, f.containers, f.min_time,
                                                                             f.max_time)]
        plan = self._plan("erasure", f"CASE WHEN {selector.sql()} THEN 'erasure' END", candidates,
                          {"selector": selector.describe(), "reason": reason})
        plan.selector = selector
        return plan

    def finish_pending_erasures(self) -> list[Removal]:
        """Go on with erasures a legal hold kept from finishing (after a release, at every retention run)."""
        results = []
        for erasure_id, selector, reason in self.catalog.pending_erasures():
            plan = self.erasure_plan(selector, reason)
            if any(d.action == "held" for d in plan.decisions) and not any(
                    d.action in ("delete", "rewrite") for d in plan.decisions):
                continue  # still held, nothing to do yet
            plan.pending_id = erasure_id
            plan.details["pending_erasure"] = erasure_id
            results.append(self.apply(plan))
        return results

    def _plan(self, what: str, why_sql: str, candidates: list[FileEntry], details: dict[str, Any]) -> RemovalPlan:
        holds = self.catalog.holds()
        decisions = []
        with self.progress.phase(f"{what}: scan", len(candidates), sum(f.bytes for f in candidates)) as step:
            for f in candidates:
                counts = dict(self.writer.con.execute(
                    f"SELECT {WHY}, count(*) FROM (SELECT {why_sql} AS {WHY} FROM ({self._scan(f)})) "
                    f"WHERE {WHY} IS NOT NULL GROUP BY ALL").fetchall())
                decisions.append(Decision(f, counts, tuple(h.id for h in holding(holds, f))))
                step(f.bytes)
        return RemovalPlan(what, why_sql, decisions, details)

    def _scan(self, f: FileEntry) -> str:
        return self.writer.scan({self.keyring.get(f.key_id): [self.storage.location(f.tier, f.path)]})

    # applying --------------------------------------------------------------

    def key_destruction_plan(self, key_id: str) -> RemovalPlan:
        """Destroying a data key by hand: every file it encrypts goes with it (their records become
        unreadable). Refused, naming the hold, when a held file needs the key."""
        files = [f for f in self.catalog.files() if f.key_id == key_id]
        holds = self.catalog.holds()
        for f in files:
            held = holding(holds, f)
            if held:
                raise EncryptionKeyError(f"data key {key_id} encrypts {f.path}, which legal hold {held[0].id} "
                                         f"({held[0].selector.describe()}: {held[0].reason!r}) keeps; release the "
                                         "hold first")
        return RemovalPlan("key-destroy", "'key destroyed'", [Decision(f, {"key destroyed": f.rows}, ()) for f in files],
                    {"key_id": key_id})

    def retired_ready(self) -> bool:
        """Whether a retired key could be destroyed now (no held file needs it any more)."""
        retired = set(self.catalog.retired_data_keys())
        if not retired:
            return False
        holds = self.catalog.holds()
        return bool(retired - {f.key_id for f in self.catalog.files() if holding(holds, f)})

    def apply(self, plan: RemovalPlan) -> Removal:
        """Carry out a plan; returns what was done (also appended to the audit trail)."""
        with self.storage.exclusive():
            start = self.audit.append(plan.what, {"status": "started", **plan.summary()})
            acting = [d for d in plan.decisions if d.action in ("delete", "rewrite")]
            acting_paths = {d.entry.path for d in acting}
            # every key that ever encrypted a deleted record, and those earlier runs could not destroy yet
            doomed = set(self.keyring.lineage(d.entry for d in acting)) | set(self.catalog.retired_data_keys())
            # retired first, so no writer picks one of them up for a new file while this runs
            self.catalog.retire_data_keys(sorted(doomed), f"{plan.what} (audit #{start['seq']})")
            holds = self.catalog.holds()
            users = [f for f in self.catalog.files() if f.key_id in doomed and f.path not in acting_paths]
            held_keys = {f.key_id for f in users if holding(holds, f)}
            rekey = [f for f in users if f.key_id not in held_keys]
            fresh: dict[str, DataKey] = {}
            written: list[NewFile] = []
            work = [d.entry for d in acting] + rekey
            try:
                with self.progress.phase(plan.what, len(work), sum(f.bytes for f in work)) as step:
                    ranges = []
                    for d in acting:
                        ranges += self._deleted_ranges(d, plan.why_sql)
                        if d.action == "rewrite":
                            written.append(self._rewrite(d.entry, f"WHERE {WHY} IS NULL", plan.why_sql,
                                                         start["seq"], fresh))
                        step(d.entry.bytes)
                    for f in rekey:
                        written.append(self._rewrite(f, "", plan.why_sql, start["seq"], fresh))
                        step(f.bytes)
                self.catalog.replace(work, written, 0, ranges, start["seq"])
            except BaseException:
                for new in written:
                    self.storage.discard(new.entry.tier, new.entry.path)
                raise
            tidy(self.catalog, self.storage, ())
            destroyed = self.shred(doomed)
            retired = sorted(doomed - set(destroyed))  # a held file (or one written meanwhile) still needs them
            kept = plan.summary()["kept_by_hold"]
            pending = None
            if plan.what == "erasure" and plan.selector is not None:
                if plan.pending_id is None and kept:
                    pending = self.catalog.add_pending_erasure(plan.selector, plan.details["reason"], start["seq"])
                elif plan.pending_id is not None:
                    pending = plan.pending_id
                    if not kept:
                        self.catalog.finish_erasure(plan.pending_id)
            result = Removal(started_seq=start["seq"],
                             files_deleted=sum(1 for d in acting if d.action == "delete"),
                             files_rewritten=sum(1 for d in acting if d.action == "rewrite"),
                             files_reencrypted=len(rekey), rows_deleted=sum(d.rows for d in acting),
                             deleted_ranges=len(ranges), keys_destroyed=destroyed, keys_retired=retired,
                             kept_by_hold=kept, pending_erasure=pending)
            self.audit.append(plan.what, result.record())
        return result

    def _deleted_ranges(self, d: Decision, why_sql: str) -> list[tuple[str, int, int, str]]:
        """Byte ranges of the deleted records, adjacent ones merged (gaps and islands)."""
        return self.writer.con.execute(f"""
            SELECT source_id, min(source_offset), max(source_end), {WHY} FROM (
              SELECT *, sum(CASE WHEN source_offset <= prev_end THEN 0 ELSE 1 END)
                          OVER (PARTITION BY source_id, {WHY} ORDER BY source_offset) AS island FROM (
                SELECT source_id, source_offset, source_end, {WHY},
                       max(source_end) OVER (PARTITION BY source_id, {WHY} ORDER BY source_offset
                                             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_end
                FROM (SELECT *, {why_sql} AS {WHY} FROM ({self._scan(d.entry)})) WHERE {WHY} IS NOT NULL))
            GROUP BY source_id, {WHY}, island ORDER BY 1, 2""").fetchall()

    def _rewrite(self, f: FileEntry, where: str, why_sql: str, seq: int, fresh: dict[str, DataKey]) -> NewFile:
        scope = self._scope_of(f.key_id)
        key = fresh.get(scope) or fresh.setdefault(scope, self.keyring.new_for_scope(scope))
        # named after what it holds: the original's name and the audit entry that rewrote it
        rel = re.sub(r"(-r\d+)?\.parquet$", f"-r{seq}.parquet", f.path)
        query = (f"SELECT * EXCLUDE ({WHY}) FROM (SELECT *, {why_sql} AS {WHY} FROM ({self._scan(f)})) {where}")
        # the file's own row-group size: the trace index masks of its rows stay right
        layout = dataclasses.replace(self.storage.layout(f.tier), row_group_size=f.row_group_rows)
        w = self.writer.write(query, self.storage.target(f.tier, rel), key, layout)
        return w.new_file(path=rel, tier=f.tier, topic=f.topic, partition=f.partition, first_offset=f.first_offset,
                          last_offset=f.last_offset, key_id=key.key_id, created_at=time.time_ns(),
                          key_lineage=self.keyring.lineage([f]))

    def _scope_of(self, key_id: str) -> str:
        return next(s for k, s, _, _ in self.catalog.data_key_list() if k == key_id)

    def shred(self, candidates: set[str]) -> list[str]:
        """Destroy the keys among ``candidates`` that no listed file needs (files pending deletion are
        replaced copies: they become unreadable with the key, which is the point)."""
        in_use = {f.key_id for f in self.catalog.files()}
        destroyed = []
        for key_id in sorted(candidates - in_use):
            self.keyring.destroy(key_id)
            destroyed.append(key_id)
        return destroyed


@dataclass
class RetentionTotals:
    rows_deleted: int = 0
    files_deleted: int = 0
    files_rewritten: int = 0
    keys_destroyed: int = 0

    def add(self, results: list[Removal]) -> None:
        for result in results:
            self.rows_deleted += result.rows_deleted
            self.files_deleted += result.files_deleted
            self.files_rewritten += result.files_rewritten
            self.keys_destroyed += len(result.keys_destroyed)
