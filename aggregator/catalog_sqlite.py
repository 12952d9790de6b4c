"""The default catalog: one SQLite database (WAL, synchronous=FULL) beside the data.

See aggregator.catalog for what a catalog promises. Every change is one
``BEGIN IMMEDIATE`` transaction, so concurrent writers (the consumer, a
compaction) serialise and a reader always sees a committed state.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from aggregator.catalog import FileEntry, Mark, NewFile
from aggregator.holds import Hold, holding
from aggregator.selector import Selector
from aggregator.errors import CatalogConflictError, EncryptionKeyError
from schemas.durable import make_private_dirs
from schemas.record import MAX_SOURCE_OFFSET
from schemas.wire import Extent

SCHEMA_VERSION = 3
_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: trace_index rows name it
    path         TEXT NOT NULL UNIQUE,
    tier         TEXT NOT NULL,
    topic        TEXT NOT NULL,
    partition    TEXT NOT NULL,
    first_offset INTEGER NOT NULL,
    last_offset  INTEGER NOT NULL,
    min_time     INTEGER NOT NULL,
    max_time     INTEGER NOT NULL,
    rows         INTEGER NOT NULL,
    bytes        INTEGER NOT NULL,
    row_groups   INTEGER NOT NULL,
    row_group_rows INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    namespaces   TEXT NOT NULL,      -- JSON array
    containers   TEXT NOT NULL,      -- JSON array of namespace/pod/container
    created_at   INTEGER NOT NULL,
    key_lineage  TEXT NOT NULL DEFAULT '[]'  -- JSON array: earlier keys of these records (catalog.FileEntry)
);
CREATE INDEX IF NOT EXISTS files_time ON files (min_time, max_time);
CREATE TABLE IF NOT EXISTS trace_index (
    trace_key  INTEGER NOT NULL,     -- aggregator.trace_index.trace_key
    file_id    INTEGER NOT NULL,
    row_groups INTEGER NOT NULL,     -- bit i: row group i holds the trace; -1: any
    PRIMARY KEY (trace_key, file_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trace_index_file ON trace_index (file_id);
CREATE TABLE IF NOT EXISTS pending_deletes (
    tier   TEXT NOT NULL,
    path   TEXT NOT NULL,
    due_at INTEGER NOT NULL,
    PRIMARY KEY (tier, path)
);
CREATE TABLE IF NOT EXISTS holds (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace      TEXT, pod TEXT, container TEXT,   -- globs; NULL: any
    since_ns       INTEGER, until_ns INTEGER,         -- NULL: unbounded
    reason         TEXT NOT NULL,
    created_at     INTEGER NOT NULL, created_by TEXT NOT NULL,
    released_at    INTEGER, released_by TEXT, release_reason TEXT
);
CREATE TABLE IF NOT EXISTS erasures (               -- erasure requests a legal hold kept from finishing
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace  TEXT, pod TEXT, container TEXT, since_ns INTEGER, until_ns INTEGER,
    reason     TEXT NOT NULL,
    audit_seq  INTEGER NOT NULL,       -- the erasure's first run
    created_at INTEGER NOT NULL,
    done_at    INTEGER
);
CREATE TABLE IF NOT EXISTS deleted_ranges (          -- records removed by retention or erasure
    source_id TEXT NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL,
    why TEXT NOT NULL, audit_seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deleted_ranges_source ON deleted_ranges (source_id, start);
CREATE TABLE IF NOT EXISTS data_keys (
    key_id       TEXT PRIMARY KEY,
    scope        TEXT NOT NULL,      -- tier_YYYYMMDD
    wrapped      BLOB NOT NULL,      -- AES-GCM under the master key; empty once destroyed
    master_id    TEXT NOT NULL,      -- id (hash prefix) of the master key that wraps it
    created_at   INTEGER NOT NULL,
    destroyed_at INTEGER,
    retired_at   INTEGER,            -- set: destroy as soon as no file needs it; never used for writes
    retired_why  TEXT
);
CREATE TABLE IF NOT EXISTS source_marks (
    topic       TEXT NOT NULL,
    partition   TEXT NOT NULL,
    source_id   TEXT NOT NULL,
    stream      TEXT NOT NULL,
    max_offset  INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, source_id, stream)
);
CREATE TABLE IF NOT EXISTS source_extents (          -- how long each source is, as its shipper reported
    source_id TEXT PRIMARY KEY,
    path      TEXT NOT NULL,
    length    INTEGER NOT NULL,
    sealed    INTEGER NOT NULL,        -- 1: the file was finished, nothing more will come
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (
    topic       TEXT NOT NULL,
    partition   TEXT NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""

_COLUMNS = tuple(FileEntry.__dataclass_fields__)
_SELECT_FILES = f"SELECT {', '.join('f.' + c for c in _COLUMNS)} FROM files f"
_JSON_COLUMNS = ("namespaces", "containers", "key_lineage")
# Columns added after version 2, for catalogs created before them.
_ADDED_COLUMNS = (("files", "key_lineage", "TEXT NOT NULL DEFAULT '[]'"), ("data_keys", "retired_at", "INTEGER"),
                  ("data_keys", "retired_why", "TEXT"))


def _entry(row: Sequence[object]) -> FileEntry:
    d = dict(zip(_COLUMNS, row))
    for c in _JSON_COLUMNS:
        d[c] = tuple(orjson.loads(d[c]))  # type: ignore[arg-type]
    return FileEntry(**d)  # type: ignore[arg-type]


class SqliteCatalog:
    def __init__(self, path: Path) -> None:
        make_private_dirs(path.parent)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # Destroyed data keys must not linger in free pages.
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(_DDL)
        for table, column, decl in _ADDED_COLUMNS:
            if column not in {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        self._db.execute("INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE "
                         "SET value = excluded.value", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._db.close()

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    # consumption -----------------------------------------------------------

    def positions(self, topic: str) -> dict[str, int]:
        rows = self._db.execute("SELECT partition, next_offset FROM positions WHERE topic = ?", (topic,))
        return dict(rows.fetchall())

    def source_marks(self, topic: str) -> dict[str, dict[Mark, int]]:
        out: dict[str, dict[Mark, int]] = {}
        for partition, sid, stream, offset in self._db.execute(
                "SELECT partition, source_id, stream, max_offset FROM source_marks WHERE topic = ?", (topic,)):
            out.setdefault(partition, {})[(sid, stream)] = offset
        return out

    def commit(self, new: NewFile | None, topic: str, partition: str, next_offset: int,
               marks: dict[Mark, int] | None = None, extents: Sequence[Extent] = ()) -> None:
        db = self._db
        with self._tx():
            if extents:
                db.executemany("INSERT INTO source_extents VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                               "path = CASE WHEN excluded.length > length THEN excluded.path ELSE path END, "
                               "length = max(length, excluded.length), sealed = max(sealed, excluded.sealed), "
                               "updated_at = excluded.updated_at",
                               [(e.source_id, e.path, e.length, int(e.sealed), time.time_ns()) for e in extents])
            if marks:
                # a mark past any real file (a forgery stored before batches were validated) is replaced
                db.executemany("INSERT INTO source_marks VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE "
                               f"SET max_offset = CASE WHEN max_offset >= {MAX_SOURCE_OFFSET} THEN excluded.max_offset "
                               "ELSE max(max_offset, excluded.max_offset) END",
                               [(topic, partition, sid, stream, off) for (sid, stream), off in marks.items()])
            if new is not None:
                self._insert(new)
            db.execute("INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT (topic, partition) "
                       "DO UPDATE SET next_offset = excluded.next_offset", (topic, partition, next_offset))

    def source_extents(self) -> list[tuple[str, str, int, bool]]:
        return [(sid, p, n, bool(sealed)) for sid, p, n, sealed in self._db.execute(
            "SELECT source_id, path, length, sealed FROM source_extents ORDER BY source_id")]

    # files -----------------------------------------------------------------

    def _insert(self, new: NewFile) -> None:
        key = self._db.execute("SELECT destroyed_at FROM data_keys WHERE key_id = ?", (new.entry.key_id,)).fetchone()
        if key is not None and key[0] is not None:
            raise EncryptionKeyError(f"data key {new.entry.key_id} was destroyed while {new.entry.path} was being "
                                     "written with it; the write is retried under a new key")
        values = [getattr(new.entry, c) for c in _COLUMNS]
        for c in _JSON_COLUMNS:
            values[_COLUMNS.index(c)] = orjson.dumps(list(getattr(new.entry, c))).decode()
        cur = self._db.execute(f"INSERT INTO files ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                               values)
        self._db.executemany("INSERT INTO trace_index VALUES (?, ?, ?)",
                             [(key, cur.lastrowid, mask) for key, mask in new.traces])

    def files(self, tier: str | None = None, since_ns: int | None = None,
              until_ns: int | None = None) -> list[FileEntry]:
        where, params = [], []
        for clause, value in (("f.tier = ?", tier), ("f.max_time >= ?", since_ns), ("f.min_time < ?", until_ns)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = _SELECT_FILES + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY f.tier, f.path"
        return [_entry(r) for r in self._db.execute(sql, params)]

    def totals(self) -> tuple[int, int]:
        files, groups = self._db.execute("SELECT count(*), coalesce(sum(row_groups), 0) FROM files").fetchone()
        return files, groups

    def replace(self, removed: Sequence[FileEntry], added: Sequence[NewFile], delete_at_ns: int,
                deleted: Sequence[tuple[str, int, int, str]] = (), audit_seq: int = 0) -> None:
        db = self._db
        with self._tx():
            # a hold placed after the job was planned still wins: checked in the swap's own transaction
            holds = self.holds()
            for e in removed:
                held = holding(holds, e)
                if held:
                    raise CatalogConflictError(f"legal hold {held[0].id} ({held[0].selector.describe()}) was placed "
                                               f"on {e.path} while it was being replaced; nothing was changed")
            db.executemany("INSERT INTO deleted_ranges VALUES (?, ?, ?, ?, ?)", [(*r, audit_seq) for r in deleted])
            for e in removed:
                row = db.execute("SELECT id FROM files WHERE path = ?", (e.path,)).fetchone()
                if row is None:
                    raise CatalogConflictError(f"{e.path} left the catalog while being replaced; "
                                               "another compaction or retention ran at the same time, retry")
                db.execute("DELETE FROM trace_index WHERE file_id = ?", row)
                db.execute("DELETE FROM files WHERE id = ?", row)
                db.execute("INSERT OR REPLACE INTO pending_deletes VALUES (?, ?, ?)", (e.tier, e.path, delete_at_ns))
            for new in added:
                self._insert(new)

    def pending_deletes(self, due_by_ns: int | None = None) -> list[tuple[str, str]]:
        sql = "SELECT tier, path FROM pending_deletes" + (" WHERE due_at <= ?" if due_by_ns is not None else "")
        return self._db.execute(sql, (due_by_ns,) if due_by_ns is not None else ()).fetchall()

    def forget_pending(self, paths: Sequence[tuple[str, str]]) -> None:
        with self._tx():
            self._db.executemany("DELETE FROM pending_deletes WHERE tier = ? AND path = ?", paths)

    def trace_files(self, trace_key: int) -> list[tuple[FileEntry, int]]:
        rows = self._db.execute(_SELECT_FILES.replace(" FROM files f", ", t.row_groups FROM trace_index t "
                                                      "JOIN files f ON f.id = t.file_id WHERE t.trace_key = ? "
                                                      "ORDER BY f.min_time"), (trace_key,))
        return [(_entry(r[:-1]), r[-1]) for r in rows]

    # compliance ------------------------------------------------------------

    def add_hold(self, selector: Selector, reason: str, by: str) -> int:
        cur = self._db.execute(
            "INSERT INTO holds (namespace, pod, container, since_ns, until_ns, reason, created_at, created_by) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (selector.namespace, selector.pod, selector.container,
                                                selector.since_ns, selector.until_ns, reason, time.time_ns(), by))
        return int(cur.lastrowid or 0)

    def holds(self, include_released: bool = False) -> list[Hold]:
        sql = ("SELECT id, namespace, pod, container, since_ns, until_ns, reason, created_at, created_by, "
               "released_at, released_by, release_reason FROM holds"
               + ("" if include_released else " WHERE released_at IS NULL") + " ORDER BY id")
        return [Hold(r[0], Selector(*r[1:6]), *r[6:]) for r in self._db.execute(sql)]

    def release_hold(self, hold_id: int, by: str, reason: str) -> Hold | None:
        with self._tx():
            self._db.execute("UPDATE holds SET released_at = ?, released_by = ?, release_reason = ? "
                             "WHERE id = ? AND released_at IS NULL", (time.time_ns(), by, reason, hold_id))
        return next((h for h in self.holds(include_released=True) if h.id == hold_id), None)

    def add_pending_erasure(self, selector: Selector, reason: str, audit_seq: int) -> int:
        cur = self._db.execute(
            "INSERT INTO erasures (namespace, pod, container, since_ns, until_ns, reason, audit_seq, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (selector.namespace, selector.pod, selector.container,
                                                selector.since_ns, selector.until_ns, reason, audit_seq,
                                                time.time_ns()))
        return int(cur.lastrowid or 0)

    def pending_erasures(self) -> list[tuple[int, Selector, str]]:
        return [(r[0], Selector(*r[1:6]), r[6]) for r in self._db.execute(
            "SELECT id, namespace, pod, container, since_ns, until_ns, reason FROM erasures "
            "WHERE done_at IS NULL ORDER BY id")]

    def finish_erasure(self, erasure_id: int) -> None:
        self._db.execute("UPDATE erasures SET done_at = ? WHERE id = ?", (time.time_ns(), erasure_id))

    def deleted_ranges(self) -> list[tuple[str, int, int, str]]:
        return self._db.execute('SELECT source_id, start, "end", why FROM deleted_ranges '
                                "ORDER BY source_id, start").fetchall()

    def audit_head(self) -> tuple[int, str] | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'audit_head'").fetchone()
        if row is None:
            return None
        seq, digest = row[0].split(":", 1)
        return int(seq), digest

    def set_audit_head(self, seq: int, digest: str) -> None:
        self._db.execute("INSERT INTO meta VALUES ('audit_head', ?) ON CONFLICT (key) DO UPDATE "
                         "SET value = excluded.value", (f"{seq}:{digest}",))

    def audit_key(self) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'audit_key'").fetchone()
        return row[0] if row else None

    def audit_evidence(self) -> int:
        # each of these rows was made together with an audit entry
        return self._db.execute(
            "SELECT (SELECT count(*) FROM holds) + (SELECT count(*) FROM deleted_ranges) + "
            "(SELECT count(*) FROM erasures) + (SELECT count(*) FROM data_keys WHERE destroyed_at IS NOT NULL "
            "OR retired_at IS NOT NULL)").fetchone()[0]

    def set_audit_key(self, fingerprint: str) -> None:
        # first use only: a pin, once set, is never replaced by this call
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('audit_key', ?)", (fingerprint,))

    # data keys -------------------------------------------------------------

    def live_data_key(self, scope: str) -> tuple[str] | None:
        return self._db.execute("SELECT key_id FROM data_keys WHERE scope = ? AND destroyed_at IS NULL "
                                "AND retired_at IS NULL ORDER BY created_at DESC, rowid DESC LIMIT 1",
                                (scope,)).fetchone()

    def add_data_key(self, key_id: str, scope: str, wrapped: bytes, master_id: str) -> None:
        self._db.execute("INSERT INTO data_keys (key_id, scope, wrapped, master_id, created_at) "
                         "VALUES (?, ?, ?, ?, ?)", (key_id, scope, wrapped, master_id, time.time_ns()))

    def data_key(self, key_id: str) -> tuple[bytes, int | None] | None:
        return self._db.execute("SELECT wrapped, destroyed_at FROM data_keys WHERE key_id = ?", (key_id,)).fetchone()

    def live_data_keys(self) -> list[tuple[str, bytes]]:
        return self._db.execute("SELECT key_id, wrapped FROM data_keys WHERE destroyed_at IS NULL").fetchall()

    def data_key_list(self) -> list[tuple[str, str, str, bool]]:
        return [(k, s, m, d is not None) for k, s, m, d in self._db.execute(
            "SELECT key_id, scope, master_id, destroyed_at FROM data_keys ORDER BY scope, created_at")]

    def rewrap_data_keys(self, wrapped: dict[str, bytes], master_id: str) -> None:
        with self._tx():
            self._db.executemany("UPDATE data_keys SET wrapped = ?, master_id = ? WHERE key_id = ?",
                                 [(w, master_id, k) for k, w in wrapped.items()])

    def destroy_data_key(self, key_id: str) -> None:
        with self._tx():
            self._db.execute("UPDATE data_keys SET wrapped = x'', destroyed_at = ? WHERE key_id = ?",
                             (time.time_ns(), key_id))
        # old page images of the wrapped key leave the WAL too
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def retire_data_keys(self, key_ids: Sequence[str], why: str) -> None:
        with self._tx():
            self._db.executemany("UPDATE data_keys SET retired_at = coalesce(retired_at, ?), "
                                 "retired_why = coalesce(retired_why, ?) WHERE key_id = ? AND destroyed_at IS NULL",
                                 [(time.time_ns(), why, k) for k in key_ids])

    def retired_data_keys(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key_id, retired_why FROM data_keys WHERE retired_at IS NOT NULL "
                                     "AND destroyed_at IS NULL ORDER BY key_id"))


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
