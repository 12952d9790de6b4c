"""The default catalog: one SQLite database (WAL, synchronous=FULL) beside the data.

See lake.catalog for what a catalog promises. Every change is one
``BEGIN IMMEDIATE`` transaction, so concurrent writers (the consumer, a
compaction) serialise and a reader always sees a committed state.

SQLite stores whatever it is given in any column, so every value read is
checked against what loglake writes there (``_KINDS``): a hand-edited or
damaged value is a CatalogValueError naming the catalog, the row and the value,
not a TypeError deep in a query or a compaction, and ``malformed()`` lists them
all for ``verify``. A catalog that cannot be opened or written (a read-only data
directory, a file that is no database) is one sentence too.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from lake.catalog.model import TIERS, FileEntry, Mark, NewFile, Tier
from lake.holds import Hold, holding
from lake.selector import Selector
from runtime.durable import make_private_dirs
from runtime.errors import CatalogConflictError, CatalogValueError, ConfigError, EncryptionKeyError
from schemas.record import MAX_SOURCE_OFFSET
from schemas.wire import Extent

SCHEMA_VERSION = 5   # 5: trace masks count from first_group; a reader of 4 would take them from row group 0
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
    trace_key  INTEGER NOT NULL,     -- lake.trace_index.trace_key
    file_id    INTEGER NOT NULL,
    row_groups INTEGER NOT NULL,     -- bit i: row group first_group + i holds the trace; -1: any
    first_group INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (trace_key, file_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trace_index_file ON trace_index (file_id);
CREATE TABLE IF NOT EXISTS needle_filters (   -- lake.needle_index: files written with a needle index
    file_id INTEGER PRIMARY KEY,
    salt    TEXT NOT NULL,
    blocks  INTEGER NOT NULL         -- blocks per row group
);
CREATE TABLE IF NOT EXISTS needle_blocks (
    file_id INTEGER NOT NULL,
    block   INTEGER NOT NULL,
    bits    BLOB NOT NULL,           -- this block of row group 0, 1, … (64 bytes each)
    seal    BLOB NOT NULL,           -- lake.needle_index.seal
    PRIMARY KEY (file_id, block)
) WITHOUT ROWID;
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
                  ("data_keys", "retired_why", "TEXT"),
                  # masks were from row group 0 before: 0 keeps their meaning
                  ("trace_index", "first_group", "INTEGER NOT NULL DEFAULT 0"))


def _texts(v: object) -> bool:
    try:
        items = orjson.loads(v) if isinstance(v, str) else None
    except orjson.JSONDecodeError:
        return False
    return isinstance(items, list) and all(isinstance(i, str) for i in items)


Kind = tuple[str, Callable[[object], bool]]
_INT: Kind = ("an integer", lambda v: type(v) is int)
_TEXT: Kind = ("text", lambda v: type(v) is str)
_TIER_OF = {t.value: t for t in Tier}
_TIER: Kind = (f"one of {', '.join(TIERS)}", lambda v: v in TIERS)
_LIST: Kind = ("a JSON array of text", _texts)
_BLOB: Kind = ("bytes", lambda v: type(v) is bytes)
_INT_OR_NULL: Kind = ("an integer or NULL", lambda v: v is None or type(v) is int)
_HEX: Kind = ("hex digits", lambda v: type(v) is str and re.fullmatch(r"[0-9a-f]+", v) is not None)
_NATURAL: Kind = ("a whole number", lambda v: type(v) is int and v >= 0)
_POSITIVE: Kind = ("a whole number above 0", lambda v: type(v) is int and v > 0)
_BLOCKS: Kind = ("64-byte blocks", lambda v: type(v) is bytes and len(v) % 64 == 0 and len(v) > 0)
_SEAL: Kind = ("a 16-byte seal", lambda v: type(v) is bytes and len(v) == 16)
_TEXT_OR_NULL: Kind = ("text or NULL", lambda v: v is None or type(v) is str)
_SCHEMA_VERSION: Kind = ("a whole number", lambda v: type(v) is str and v.isdigit())
_AUDIT_HEAD: Kind = ("<seq>:<hex digest>", lambda v: type(v) is str and re.fullmatch(r"\d+:[0-9a-f]+", v) is not None)
# What loglake writes in each column: (table, the columns naming a row, {column: kind}).
_FILE_KINDS = {"path": _TEXT, "tier": _TIER, "topic": _TEXT, "partition": _TEXT, "first_offset": _INT,
               "last_offset": _INT, "min_time": _INT, "max_time": _INT, "rows": _INT, "bytes": _INT,
               "row_groups": _INT, "row_group_rows": _INT, "sha256": _TEXT, "key_id": _TEXT, "namespaces": _LIST,
               "containers": _LIST, "created_at": _INT, "key_lineage": _LIST}
_FILE_TYPES = tuple(int if _FILE_KINDS[c] is _INT else str for c in _COLUMNS)
_ONLY_STR = {str}
_KINDS: dict[str, tuple[tuple[str, ...], dict[str, Kind]]] = {
    "files": (("path",), _FILE_KINDS),
    "positions": (("topic", "partition"), {"topic": _TEXT, "partition": _TEXT, "next_offset": _INT}),
    "source_marks": (("topic", "partition", "source_id", "stream"), {
        "topic": _TEXT, "partition": _TEXT, "source_id": _TEXT, "stream": _TEXT, "max_offset": _INT}),
    "source_extents": (("source_id",), {"source_id": _TEXT, "path": _TEXT, "length": _INT, "sealed": _INT,
                                        "updated_at": _INT}),
    "trace_index": (("trace_key", "file_id"), {"trace_key": _INT, "file_id": _INT, "row_groups": _INT,
                                               "first_group": _NATURAL}),
    "needle_filters": (("file_id",), {"file_id": _INT, "salt": _HEX, "blocks": _POSITIVE}),
    "needle_blocks": (("file_id", "block"), {"file_id": _INT, "block": _INT, "bits": _BLOCKS, "seal": _SEAL}),
    "pending_deletes": (("tier", "path"), {"tier": _TIER, "path": _TEXT, "due_at": _INT}),
    "holds": (("id",), {"id": _INT, "namespace": _TEXT_OR_NULL, "pod": _TEXT_OR_NULL, "container": _TEXT_OR_NULL,
                        "since_ns": _INT_OR_NULL, "until_ns": _INT_OR_NULL, "reason": _TEXT, "created_at": _INT,
                        "created_by": _TEXT, "released_at": _INT_OR_NULL, "released_by": _TEXT_OR_NULL,
                        "release_reason": _TEXT_OR_NULL}),
    "erasures": (("id",), {"id": _INT, "namespace": _TEXT_OR_NULL, "pod": _TEXT_OR_NULL, "container": _TEXT_OR_NULL,
                           "since_ns": _INT_OR_NULL, "until_ns": _INT_OR_NULL, "reason": _TEXT, "audit_seq": _INT,
                           "created_at": _INT, "done_at": _INT_OR_NULL}),
    "deleted_ranges": (("source_id", "start"), {"source_id": _TEXT, "start": _INT, "end": _INT, "why": _TEXT,
                                                "audit_seq": _INT}),
    "data_keys": (("key_id",), {"key_id": _TEXT, "scope": _TEXT, "wrapped": _BLOB, "master_id": _TEXT,
                                "created_at": _INT, "destroyed_at": _INT_OR_NULL, "retired_at": _INT_OR_NULL,
                                "retired_why": _TEXT_OR_NULL}),
    "meta": (("key",), {"key": _TEXT, "value": _TEXT}),
}
_META_KINDS = {"schema_version": _SCHEMA_VERSION, "audit_head": _AUDIT_HEAD}


def _show(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _quote(name: str) -> str:
    return f'"{name}"'


class SqliteCatalog:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            make_private_dirs(path.parent)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
            self._open()
        except OSError as e:
            raise self._unwritable(e.strerror or str(e)) from None
        except sqlite3.DatabaseError as e:
            if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
                raise self._unwritable(str(e)) from None
            advice = ("check that no other program holds it locked" if isinstance(e, sqlite3.OperationalError)
                      else "restore it from a backup")   # not a database, or a damaged one
            raise ConfigError(f"the catalog {path} cannot be opened ({e}); {advice}") from None

    def _unwritable(self, why: str) -> ConfigError:
        return ConfigError(f"the aggregator data directory {self.path.parent} cannot be written ({why}); make it "
                           "writable, or point [aggregator] data_dir (LOGLAKE_AGGREGATOR_DATA_DIR) at a writable "
                           "directory")

    def _open(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # Destroyed data keys must not linger in free pages.
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(_DDL)
        version = self._meta("schema_version")
        if version is not None and int(version) > SCHEMA_VERSION:
            raise ConfigError(f"the catalog {self.path} has schema version {version}, this loglake knows up to "
                              f"{SCHEMA_VERSION}; run the newer loglake that wrote it")
        for table, column, decl in _ADDED_COLUMNS:
            if column not in {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        self._db.execute("INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE "
                         "SET value = excluded.value", (str(SCHEMA_VERSION),))

    # values as read: checked (see _KINDS) -------------------------------------

    def _problem(self, table: str, key: Sequence[object], column: str, value: object, kind: Kind) -> str:
        row = f"{table} row {', '.join(str(k) for k in key)}" if key else f"a {table} row"
        return (f"catalog {self.path}: {row} has {column} = {_show(value)}, not {kind[0]}; restore the "
                "catalog from a backup, or correct that value with sqlite3")

    def _checked(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> list[Sequence[object]]:
        """``rows`` of ``table`` (holding ``columns``), each value of the kind loglake writes there."""
        keys, kinds = _KINDS[table]
        at = [columns.index(k) for k in keys if k in columns]
        checks = [(i, c, kinds[c]) for i, c in enumerate(columns) if c in kinds]
        for row in rows:
            for i, c, kind in checks:
                if not kind[1](row[i]):
                    raise CatalogValueError(self._problem(table, [row[j] for j in at], c, row[i], kind))
        return list(rows)

    def _select(self, table: str, columns: Sequence[str], sql: str, params: Sequence[object] = ()) -> list:
        return self._checked(table, columns, self._db.execute(sql, params).fetchall())

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        kind = _META_KINDS.get(key, _TEXT)
        if not kind[1](row[0]):
            raise CatalogValueError(self._problem("meta", [key], "value", row[0], kind))
        return row[0]

    def _entry(self, row: Sequence[object]) -> FileEntry:
        # the common case at the cost of one tuple comparison (query planning reads every listed file)
        d = dict(zip(_COLUMNS, row))
        try:
            if tuple(map(type, row)) != _FILE_TYPES:
                raise ValueError
            d["tier"] = _TIER_OF[str(d["tier"])]   # a KeyError names the value below, like the rest
            for c in _JSON_COLUMNS:
                d[c] = items = tuple(orjson.loads(d[c]))  # type: ignore[arg-type]
                if items and set(map(type, items)) != _ONLY_STR:   # no Python loop: planning reads them all
                    raise ValueError
        except (ValueError, TypeError, KeyError):   # orjson.JSONDecodeError is a ValueError
            self._checked("files", _COLUMNS, [row])   # names the value
            raise
        return FileEntry(**d)  # type: ignore[arg-type]

    def malformed(self, limit: int = 100) -> list[str]:
        found: list[str] = []
        for table, (keys, kinds) in _KINDS.items():
            columns = list(kinds)
            for row in self._db.execute(f"SELECT {', '.join(map(_quote, columns))} FROM {table}"):
                for i, c in enumerate(columns):
                    kind = _META_KINDS.get(row[0], _TEXT) if table == "meta" and c == "value" else kinds[c]
                    if not kind[1](row[i]):
                        found.append(self._problem(table, [row[columns.index(k)] for k in keys], c, row[i], kind))
                        if len(found) >= limit:
                            return found
        return found

    def close(self) -> None:
        self._db.close()

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    # consumption -----------------------------------------------------------

    def positions(self, topic: str) -> dict[str, int]:
        return dict(self._select("positions", ("partition", "next_offset"),
                                 "SELECT partition, next_offset FROM positions WHERE topic = ?", (topic,)))

    def source_marks(self, topic: str) -> dict[str, dict[Mark, int]]:
        out: dict[str, dict[Mark, int]] = {}
        for partition, sid, stream, offset in self._select(
                "source_marks", ("partition", "source_id", "stream", "max_offset"),
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
        return [(sid, p, n, bool(sealed)) for sid, p, n, sealed in self._select(
            "source_extents", ("source_id", "path", "length", "sealed"),
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
        self._db.executemany("INSERT INTO trace_index (trace_key, file_id, first_group, row_groups) "
                             "VALUES (?, ?, ?, ?)", [(key, cur.lastrowid, first, mask) for key, first, mask in new.traces])
        if new.needles is not None:
            self._db.execute("INSERT INTO needle_filters VALUES (?, ?, ?)",
                             (cur.lastrowid, new.needles.salt, new.needles.blocks))
            self._db.executemany("INSERT INTO needle_blocks VALUES (?, ?, ?, ?)",
                                 [(cur.lastrowid, block, bits, tag) for block, bits, tag in new.needles.rows])

    def files(self, tier: Tier | None = None, since_ns: int | None = None,
              until_ns: int | None = None) -> list[FileEntry]:
        where, params = [], []
        for clause, value in (("f.tier = ?", tier), ("f.max_time >= ?", since_ns), ("f.min_time < ?", until_ns)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = _SELECT_FILES + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY f.tier, f.path"
        return [self._entry(r) for r in self._db.execute(sql, params)]

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
                db.execute("DELETE FROM needle_filters WHERE file_id = ?", row)
                db.execute("DELETE FROM needle_blocks WHERE file_id = ?", row)
                db.execute("DELETE FROM files WHERE id = ?", row)
                db.execute("INSERT OR REPLACE INTO pending_deletes VALUES (?, ?, ?)", (e.tier, e.path, delete_at_ns))
            for new in added:
                self._insert(new)

    def pending_deletes(self, due_by_ns: int | None = None) -> list[tuple[Tier, str]]:
        sql = "SELECT tier, path FROM pending_deletes" + (" WHERE due_at <= ?" if due_by_ns is not None else "")
        rows = self._select("pending_deletes", ("tier", "path"), sql, (due_by_ns,) if due_by_ns is not None else ())
        return [(_TIER_OF[tier], path) for tier, path in rows]

    def forget_pending(self, paths: Sequence[tuple[Tier, str]]) -> None:
        with self._tx():
            self._db.executemany("DELETE FROM pending_deletes WHERE tier = ? AND path = ?", paths)

    def needle_filters(self, paths: Sequence[str]) -> dict[str, tuple[str, int]]:
        out: dict[str, tuple[str, int]] = {}
        for chunk in (paths[i:i + 500] for i in range(0, len(paths), 500)):
            rows = self._select("needle_filters", ("path", "salt", "blocks"),
                                "SELECT f.path, n.salt, n.blocks FROM needle_filters n JOIN files f ON f.id = n.file_id "
                                f"WHERE f.path IN ({', '.join('?' * len(chunk))})", chunk)
            out.update((path, (salt, blocks)) for path, salt, blocks in rows)
        return out

    def needle_blocks(self, wanted: Sequence[tuple[str, int]]) -> dict[tuple[str, int], tuple[bytes, bytes]]:
        out: dict[tuple[str, int], tuple[bytes, bytes]] = {}
        for chunk in (wanted[i:i + 400] for i in range(0, len(wanted), 400)):
            # the pairs drive the join (CROSS JOIN keeps that order): a row-value IN scans the whole table
            rows = self._select("needle_blocks", ("path", "block", "bits", "seal"),
                                f"WITH w(path, block) AS (VALUES {', '.join(['(?, ?)'] * len(chunk))}) "
                                "SELECT w.path, b.block, b.bits, b.seal FROM w CROSS JOIN files f "
                                "CROSS JOIN needle_blocks b "
                                "WHERE f.path = w.path AND b.file_id = f.id AND b.block = w.block",
                                [v for pair in chunk for v in pair])
            out.update(((path, block), (bits, tag)) for path, block, bits, tag in rows)
        return out

    def trace_files(self, trace_key: int) -> list[tuple[FileEntry, int, int]]:
        rows = self._db.execute(_SELECT_FILES.replace(" FROM files f", ", t.first_group, t.row_groups "
                                                      "FROM trace_index t JOIN files f ON f.id = t.file_id "
                                                      "WHERE t.trace_key = ? ORDER BY f.min_time"),
                                (trace_key,)).fetchall()
        self._checked("trace_index", ("first_group", "row_groups"), [r[-2:] for r in rows])
        return [(self._entry(r[:-2]), r[-2], r[-1]) for r in rows]

    # compliance ------------------------------------------------------------

    def add_hold(self, selector: Selector, reason: str, by: str) -> int:
        cur = self._db.execute(
            "INSERT INTO holds (namespace, pod, container, since_ns, until_ns, reason, created_at, created_by) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (selector.namespace, selector.pod, selector.container,
                                                selector.since_ns, selector.until_ns, reason, time.time_ns(), by))
        return int(cur.lastrowid or 0)

    def holds(self, include_released: bool = False) -> list[Hold]:
        columns = ("id", "namespace", "pod", "container", "since_ns", "until_ns", "reason", "created_at",
                   "created_by", "released_at", "released_by", "release_reason")
        sql = (f"SELECT {', '.join(columns)} FROM holds"
               + ("" if include_released else " WHERE released_at IS NULL") + " ORDER BY id")
        return [Hold(r[0], Selector(*r[1:6]), *r[6:]) for r in self._select("holds", columns, sql)]

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
        columns = ("id", "namespace", "pod", "container", "since_ns", "until_ns", "reason")
        return [(r[0], Selector(*r[1:6]), r[6]) for r in self._select(
            "erasures", columns, f"SELECT {', '.join(columns)} FROM erasures WHERE done_at IS NULL ORDER BY id")]

    def finish_erasure(self, erasure_id: int) -> None:
        self._db.execute("UPDATE erasures SET done_at = ? WHERE id = ?", (time.time_ns(), erasure_id))

    def deleted_ranges(self) -> list[tuple[str, int, int, str]]:
        return self._select("deleted_ranges", ("source_id", "start", "end", "why"),
                            'SELECT source_id, start, "end", why FROM deleted_ranges ORDER BY source_id, start')

    def audit_head(self) -> tuple[int, str] | None:
        value = self._meta("audit_head")
        if value is None:
            return None
        seq, digest = value.split(":", 1)
        return int(seq), digest

    def set_audit_head(self, seq: int, digest: str) -> None:
        self._db.execute("INSERT INTO meta VALUES ('audit_head', ?) ON CONFLICT (key) DO UPDATE "
                         "SET value = excluded.value", (f"{seq}:{digest}",))

    def audit_key(self) -> str | None:
        return self._meta("audit_key")

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
        rows = self._select("data_keys", ("wrapped", "destroyed_at"),
                            "SELECT wrapped, destroyed_at FROM data_keys WHERE key_id = ?", (key_id,))
        return rows[0] if rows else None

    def live_data_keys(self) -> list[tuple[str, bytes]]:
        return self._select("data_keys", ("key_id", "wrapped"),
                            "SELECT key_id, wrapped FROM data_keys WHERE destroyed_at IS NULL")

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

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
