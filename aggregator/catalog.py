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
        self._db.executescript(_DDL)
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._db.close()

    def positions(self, topic: str) -> dict[str, int]:
        rows = self._db.execute("SELECT partition, next_offset FROM positions WHERE topic = ?", (topic,))
        return dict(rows.fetchall())

    def commit(self, entry: FileEntry | None, topic: str, partition: str, next_offset: int) -> None:
        """Record a file (if any) and the position after it, atomically."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if entry is not None:
                values = [getattr(entry, c) for c in _COLUMNS]
                values[_COLUMNS.index("namespaces")] = orjson.dumps(list(entry.namespaces)).decode()
                values[_COLUMNS.index("containers")] = orjson.dumps(list(entry.containers)).decode()
                db.execute(f"INSERT INTO files ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                           values)
            db.execute("INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT (topic, partition) "
                       "DO UPDATE SET next_offset = excluded.next_offset", (topic, partition, next_offset))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

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
