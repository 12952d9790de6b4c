"""The catalog: every stored file and every consumed position, in one transaction.

A file's entry and the position after the last offset it holds are committed
together, so after any crash the catalog says exactly which records are
stored and where consumption resumes. Files on disk that the catalog does not
list are leftovers of an interrupted write and are removed at start-up.

SQLite (WAL, synchronous=FULL) by default; ``Catalog`` is the interface a
server database would implement for several aggregators.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

SCHEMA_VERSION = 1
_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path         TEXT PRIMARY KEY,   -- relative to the tier's storage root
    tier         TEXT NOT NULL,      -- hot | warm | cold
    topic        TEXT NOT NULL,
    partition    TEXT NOT NULL,
    first_offset INTEGER NOT NULL,
    last_offset  INTEGER NOT NULL,
    min_time     INTEGER NOT NULL,   -- ns since epoch, event time
    max_time     INTEGER NOT NULL,
    rows         INTEGER NOT NULL,
    bytes        INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    namespaces   TEXT NOT NULL,      -- JSON array
    containers   TEXT NOT NULL,      -- JSON array of namespace/pod/container
    created_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS files_time ON files (min_time, max_time);
CREATE TABLE IF NOT EXISTS data_keys (
    key_id       TEXT PRIMARY KEY,
    scope        TEXT NOT NULL,      -- tier_YYYYMMDD
    wrapped      BLOB NOT NULL,      -- AES-GCM under the master key; empty once destroyed
    master_id    TEXT NOT NULL,      -- id (hash prefix) of the master key that wraps it
    created_at   INTEGER NOT NULL,
    destroyed_at INTEGER
);
CREATE TABLE IF NOT EXISTS source_marks (  -- see aggregator.dedup
    topic       TEXT NOT NULL,
    partition   TEXT NOT NULL,
    source_id   TEXT NOT NULL,
    stream      TEXT NOT NULL,
    max_offset  INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, source_id, stream)
);
CREATE TABLE IF NOT EXISTS positions (
    topic       TEXT NOT NULL,
    partition   TEXT NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""


@dataclass(frozen=True)
class FileEntry:
    path: str
    tier: str
    topic: str
    partition: str
    first_offset: int
    last_offset: int
    min_time: int
    max_time: int
    rows: int
    bytes: int
    sha256: str
    key_id: str
    namespaces: tuple[str, ...]
    containers: tuple[str, ...]
    created_at: int


_COLUMNS = tuple(FileEntry.__dataclass_fields__)


class Catalog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # Destroyed data keys must not linger in free pages.
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(_DDL)
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._db.close()

    def positions(self, topic: str) -> dict[str, int]:
        rows = self._db.execute("SELECT partition, next_offset FROM positions WHERE topic = ?", (topic,))
        return dict(rows.fetchall())

    def source_marks(self, topic: str) -> dict[str, dict[tuple[str, str], int]]:
        out: dict[str, dict[tuple[str, str], int]] = {}
        for partition, sid, stream, offset in self._db.execute(
                "SELECT partition, source_id, stream, max_offset FROM source_marks WHERE topic = ?", (topic,)):
            out.setdefault(partition, {})[(sid, stream)] = offset
        return out

    def commit(self, entry: FileEntry | None, topic: str, partition: str, next_offset: int,
               marks: dict[tuple[str, str], int] | None = None) -> None:
        """Record a file (if any), the position after it and the dedup marks of the partition, atomically."""
        db = self._db
        with self._tx():
            if marks:
                db.executemany("INSERT INTO source_marks VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE "
                               "SET max_offset = max(max_offset, excluded.max_offset)",
                               [(topic, partition, sid, stream, off) for (sid, stream), off in marks.items()])
            if entry is not None:
                values = [getattr(entry, c) for c in _COLUMNS]
                values[_COLUMNS.index("namespaces")] = orjson.dumps(list(entry.namespaces)).decode()
                values[_COLUMNS.index("containers")] = orjson.dumps(list(entry.containers)).decode()
                db.execute(f"INSERT INTO files ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                           values)
            db.execute("INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT (topic, partition) "
                       "DO UPDATE SET next_offset = excluded.next_offset", (topic, partition, next_offset))

    # data keys (aggregator.keys wraps and unwraps; this only stores) ----------------

    def live_data_key(self, scope: str) -> tuple[str] | None:
        return self._db.execute("SELECT key_id FROM data_keys WHERE scope = ? AND destroyed_at IS NULL "
                                "ORDER BY created_at DESC LIMIT 1", (scope,)).fetchone()

    def add_data_key(self, key_id: str, scope: str, wrapped: bytes, master_id: str) -> None:
        self._db.execute("INSERT INTO data_keys VALUES (?, ?, ?, ?, ?, NULL)",
                         (key_id, scope, wrapped, master_id, time.time_ns()))

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

    def _tx(self):
        return _Transaction(self._db)

    def files(self, tier: str | None = None) -> list[FileEntry]:
        sql = f"SELECT {', '.join(_COLUMNS)} FROM files"
        rows = self._db.execute(sql + " WHERE tier = ? ORDER BY path" if tier else sql + " ORDER BY path",
                                (tier,) if tier else ()).fetchall()
        out = []
        for row in rows:
            d = dict(zip(_COLUMNS, row))
            d["namespaces"] = tuple(orjson.loads(d["namespaces"]))
            d["containers"] = tuple(orjson.loads(d["containers"]))
            out.append(FileEntry(**d))
        return out


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
