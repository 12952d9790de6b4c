"""Reading the lake: the ``logs`` view over stored files, planned from the catalog, audited and sandboxed.

The file list comes from the catalog, never from a directory listing, so a
query sees exactly the committed files of every tier: hot, warm and cold, each
record once (compaction swaps files atomically in the catalog). Decryption is
transparent: each data key is registered with DuckDB and its files are read
with it.

Every way to read rows goes through the audit trail *before* it runs, and its
outcome after (``query`` then ``query-result``): a query that fails, or is
refused, is still on record. ``Lake.query`` is the path the commands take;
``connect`` (the Python API) returns a connection whose ``execute`` does the
same. The DuckDB connection is a sandbox: no file outside the tier
directories (``enable_external_access = false`` with ``allowed_directories``;
the keys, the catalog and the audit trail are not in them), no extension
loading, configuration locked; and user SQL must be one read-only statement,
so ``COPY … TO``, ``ATTACH``, ``SET`` and the like are refused. Plaintext leaves
the lake only through ``export`` or ``--output``, which are audited.

The view has the stored columns (schemas.record), ``record_id``, and the same
data under the names OpenTelemetry's and Kubernetes' semantic conventions give
it (``SEMANTIC_COLUMNS``: ``"k8s.namespace.name"``, ``"k8s.container.restart_count"``,
``"log.iostream"``, …; quoted in SQL, they hold dots). They cost nothing unless
a query names them.

Files written before ``trace_flags`` and ``resource`` existed lack them. The
view reads every file as having them (lake.duck.scan_sql without
probing; files oldest first), which costs nothing in a lake written since;
when DuckDB says a file lacks them, the lake looks at every file's columns
instead, for the rest of its life, and the view gives them as null there.
"""

from __future__ import annotations

import re
import tempfile
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from lake import config as agg_config
from lake import duck
from lake.audit import AuditLog
from lake.catalog.base import Catalog, open_catalog
from lake.catalog.model import TIERS, FileEntry
from lake.keys import DataKey, KeyRing, master_for
from lake.selector import Selector
from lake.storage import Storage
from runtime.errors import EncryptionKeyError, LoglakeError, QueryError, StorageError
from schemas.record import LOG_SCHEMA, RECORD_ID_SQL

_T = TypeVar("_T")

# What user SQL may be: one SELECT (DuckDB parses PRAGMA version, DESCRIBE, SHOW and SUMMARIZE as SELECT),
# or EXPLAIN of one. Not EXPLAIN ANALYZE: it runs the statement it explains, COPY … TO included.
_EXPLAIN = re.compile(r"\s*EXPLAIN\s+(?P<inner>.*)", re.IGNORECASE | re.DOTALL)


def check_read_only(sql: str) -> None:
    """Refuse anything but one read-only statement, with one sentence."""
    statements = _parse(sql)
    if len(statements) != 1:
        raise QueryError(f"give exactly one SQL statement (found {len(statements)}); statements cannot be chained")
    kind = statements[0].type
    if kind == duckdb.StatementType.EXPLAIN:
        m = _EXPLAIN.fullmatch(statements[0].query)
        inner = _parse(m.group("inner")) if m and not m.group("inner").upper().startswith("ANALYZE") else []
        if len(inner) == 1 and inner[0].type == duckdb.StatementType.SELECT:
            return
        raise QueryError("only EXPLAIN of one SELECT is allowed here (not EXPLAIN ANALYZE, which runs what it "
                         "explains)")
    if kind != duckdb.StatementType.SELECT:
        raise QueryError(f"only read-only SQL (SELECT) is allowed here, not {kind.name}; to take records out "
                         "of the lake use 'loglake-query export' or --output, which are audited")


def _resource(name: str) -> str:
    return f"json_extract_string(resource, '$.\"{name}\"')"


# Semantic-convention name -> SQL over the stored columns (and record_id).
SEMANTIC_COLUMNS: dict[str, str] = {
    "timestamp": "time",                       # OpenTelemetry log data model: Timestamp, ObservedTimestamp
    "observed_timestamp": "observed_time",
    "k8s.namespace.name": "namespace",
    "k8s.pod.name": "pod",
    "k8s.pod.uid": "pod_uid",
    "k8s.container.name": "container",
    "k8s.container.restart_count": f"TRY_CAST({_resource('k8s.container.restart_count')} AS INTEGER)",
    "k8s.node.name": "node",
    "container.id": "container_id",
    "container.name": _resource("container.name"),
    "service.name": _resource("service.name"),
    "log.iostream": "stream",
    "log.file.path": "source_path",
    "log.file.name": "regexp_extract(source_path, '[^/]*$')",
    "log.record.uid": "record_id",
}
VIEW_COLUMNS: tuple[str, ...] = (*LOG_SCHEMA.names, "record_id", *SEMANTIC_COLUMNS)
# A record's own columns, without the semantic-convention copies ``SELECT *`` also gives: what exports and
# --output-file need.
RECORD_COLUMNS_SQL = ", ".join([*LOG_SCHEMA.names, "record_id"])
_SEMANTIC_SQL = ", ".join(f'{sql} AS "{name}"' for name, sql in SEMANTIC_COLUMNS.items())
_VIEW_COLUMNS_TEXT = ", ".join(n if n.isidentifier() else '"' + n + '"' for n in VIEW_COLUMNS)
_MISSING_COLUMN = re.compile(r'Referenced column "([^"]+)" not found')


class StoredColumnsDiffer(QueryError):
    """DuckDB read a stored file without a column the files before it in the same scan have."""


def _parse(sql: str) -> list[duckdb.Statement]:
    try:
        return duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryError(f"query failed: {duck.first_line(e)}") from None


def regex_error(pattern: str) -> str | None:
    """Why DuckDB's RE2 refuses ``pattern`` (its first line), or None. Asked of DuckDB itself (a plain
    in-memory connection, no lake), so what passes here also runs."""
    try:
        with duckdb.connect() as con:
            con.execute("SELECT regexp_matches('', ?)", [pattern]).fetchall()
    except duckdb.Error as e:
        return duck.first_line(e).removeprefix("Invalid Input Error: ")
    return None


@dataclass(frozen=True)
class Restriction:
    """The rows a reader may see: an SQL condition the ``logs`` relation applies beneath everything a query
    adds, and the selectors (globs) it is made of, which rule out from the catalog alone the files holding
    none of those rows, so they are never opened (nor named in an export's manifest, nor timed)."""
    sql: str = "TRUE"
    selectors: tuple[Selector, ...] | None = None     # None: any file may hold such rows

    def may_hold(self, f: FileEntry) -> bool:
        return self.selectors is None or any(
            s.may_match(f.namespaces, f.containers, f.min_time, f.max_time) for s in self.selectors)

    def files(self, files: Sequence[FileEntry]) -> list[FileEntry]:
        return [f for f in files if self.may_hold(f)]


EVERYTHING = Restriction()


@dataclass(frozen=True)
class Selection:
    """What the commands ask of ``logs``: ``columns`` of the rows matching ``where``, sorted by ``order``
    ((expression, descending) pairs that order rows totally, never null), the first ``limit``. Unlike free
    SQL, a selection can be run over shares of the files at once and merged (``Lake.select``), when
    ``per_row``: whether a row matches ``where`` depends on that row alone (``--previous`` compares a row
    with every run of its container, which a share does not hold)."""
    columns: str
    where: str
    params: tuple[object, ...]
    order: tuple[tuple[str, bool], ...]
    limit: int | None = None
    per_row: bool = True

    @property
    def shareable(self) -> bool:
        """Read in shares only with a limit: the merge then holds at most a limit per share, in memory."""
        return self.per_row and bool(self.limit)

    @property
    def sql(self) -> str:
        return self._statement(self.columns, [e for e, _ in self.order])

    @property
    def share_sql(self) -> str:
        """The selection of a share of the files, its order keys as columns of their own to merge on."""
        keys = self._keys()
        return self._statement(", ".join([self.columns, *(f"{e} AS {k}" for (e, _), k in zip(self.order, keys))]),
                               keys)

    def merge(self, shares: Sequence[pa.Table]) -> pa.Table:
        """The selection of all files from those of its shares (``share_sql``)."""
        keys = self._keys()
        merged = pa.concat_tables(shares).sort_by(
            [(k, "descending" if desc else "ascending") for k, (_, desc) in zip(keys, self.order)])
        return (merged.slice(0, self.limit) if self.limit else merged).drop_columns(keys)

    def _keys(self) -> list[str]:
        return [f"__order_{i}" for i in range(len(self.order))]

    def _statement(self, columns: str, order_by: Sequence[str]) -> str:
        order = ", ".join(f"{e} DESC" if desc else e for e, (_, desc) in zip(order_by, self.order))
        return (f"SELECT {columns} FROM logs WHERE {self.where} ORDER BY {order}"
                + (f" LIMIT {self.limit}" if self.limit else ""))


IN_TIME_ORDER: tuple[tuple[str, bool], ...] = (("time", False), ("record_id", False))
NEWEST_FIRST: tuple[tuple[str, bool], ...] = (("time", True), ("record_id", True))

# DuckDB binds a query's read_parquet calls one after another, about a millisecond each (a file's footer
# and columns), so a plan of many files read in row ranges (the needle index's over weeks), each a scan of
# its own, is bound and read in shares at once, one connection each. Measured at 300M records on 2 cores,
# shares against one query, interleaved: a needle over 30 days (360 scans) 1,646 -> 1,242 ms, over 5 days
# (60) 264 -> 248, over 1 day (12) 66 -> 67, a trace (8) 44.9 -> 44.9: fewer scans gain nothing.
SHARED_SCANS = 32
MAX_SHARES = 8


class Lake:
    """The catalog, keys and storage roots a query plans and reads with."""

    def __init__(self, config_path: str | None = None, env: dict[str, str] | None = None) -> None:
        settings = agg_config.load(config_path, env)
        self.settings = settings
        if not settings.aggregator.catalog_path.exists():
            raise QueryError(f"there is no catalog at {settings.aggregator.catalog_path}: point [aggregator] data_dir "
                             "at the aggregator's data directory, or run loglake-aggregator first")
        self.catalog: Catalog = open_catalog(settings.aggregator)
        try:
            self.keyring = KeyRing(self.catalog, master_for(settings.aggregator))
        except BaseException:
            self.catalog.close()
            raise
        self.storage = Storage(settings.aggregator, settings.tiers)
        self.audit_log = AuditLog.of(settings.aggregator, self.catalog)
        # One DuckDB connection per lake: views are replaced, keys registered once.
        self._con: duckdb.DuckDBPyConnection | None = None
        self._keys: duck.KeyRegistry | None = None
        # more connections to the same database (keys and settings are shared), for Lake.select's shares
        self._shares: list[duckdb.DuckDBPyConnection] = []
        self._pool: ThreadPoolExecutor | None = None
        # Look at each file's columns (a lake with files older than some column), once that is known.
        self._probe = False
        self._spill: tempfile.TemporaryDirectory[str]

    def close(self) -> None:
        self.catalog.close()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        for share in self._shares:
            share.close()
        self._shares = []
        if self._con is not None:
            self._con.close()
            self._spill.cleanup()

    def interrupt(self) -> None:
        """Stop what the lake's connections run now (another thread's query fails with a QueryError)."""
        for con in ([self._con] if self._con is not None else []) + self._shares:
            con.interrupt()

    def audit(self, action: str, details: dict[str, Any]) -> dict[str, Any]:
        return self.audit_log.append(action, details)

    def require_data(self) -> None:
        if self.catalog.totals()[0] == 0:
            raise QueryError(f"the catalog {self.settings.aggregator.catalog_path} lists no stored files yet: "
                             "ship some logs and let loglake-aggregator write them first")

    def query(self, files: Sequence[FileEntry], sql: str, params: Sequence[object] = (), *,
              rows: Mapping[str, Sequence[tuple[int, int]]] | None = None, what: Mapping[str, Any],
              user_sql: bool = False, restrict: Restriction = EVERYTHING) -> pa.Table:
        """Run ``sql`` over the view ``logs`` of ``files``: recorded in the audit trail before it runs
        (``what`` says who asked for what), its outcome after. ``user_sql``: SQL a person wrote, which
        must be one read-only statement (and may name read_parquet itself: the key holder's own SQL).
        ``restrict``: the rows ``logs`` holds (a grant; files that cannot hold any are dropped), for the
        commands' own SQL only."""
        if user_sql:
            if restrict != EVERYTHING:
                raise QueryError("SQL a person wrote cannot be restricted in the lake's own database; run it in "
                                 "a sandbox of the rows it may see")
            return self._audited(files, sql, params, what, lambda: self._run(files, rows, sql, params, True),
                                 check=lambda: check_read_only(sql))
        files = restrict.files(files)
        return self._audited(files, sql, params, what,
                             lambda: self._run(files, rows, sql, params, False, restrict.sql))

    def select(self, files: Sequence[FileEntry], selection: Selection, *,
               rows: Mapping[str, Sequence[tuple[int, int]]] | None = None, what: Mapping[str, Any],
               restrict: Restriction = EVERYTHING) -> pa.Table:
        """``selection`` over ``files``, audited as ``query`` audits its SQL, of the rows ``restrict``
        covers. A plan of ``SHARED_SCANS`` scans or more of a shareable selection is read in shares at once,
        each on its own connection, and their selections merged."""
        files = restrict.files(files)
        return self._audited(files, selection.sql, selection.params, what,
                             lambda: self._select(files, rows, selection, restrict.sql))

    def _audited(self, files: Sequence[FileEntry], sql: str, params: Sequence[object], what: Mapping[str, Any],
                 run: Callable[[], pa.Table], check: Callable[[], None] | None = None) -> pa.Table:
        entry = self.audit("query", {**what, "sql": sql, "parameters": [str(p) for p in params],
                                     "files": len(files)})
        try:
            if check is not None:
                check()
            try:
                result = run()
            except StoredColumnsDiffer:
                if self._probe:
                    raise
                self._probe = True
                result = run()
        except LoglakeError as e:
            self.audit("query-result", {"query_seq": entry["seq"], "status": "failed", "error": type(e).__name__})
            raise
        self.audit("query-result", {"query_seq": entry["seq"], "status": "ok", "rows": result.num_rows})
        return result

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            con = duck.connect()
            con.execute("SET TimeZone = 'UTC'")
            # Files are unioned, so rows have no inherent order; every command sorts what it shows. Not
            # keeping scan order lets DuckDB finish the per-file scans in parallel (trace lookups at 100M
            # records: p50 18.7 -> 15.9 ms, measured interleaved).
            con.execute("SET preserve_insertion_order = false")
            self.storage.configure(con)
            # The sandbox: only the tier directories are reachable (not keys/, the catalog or the audit
            # trail beside them), and nothing can undo that.
            dirs = [self.storage.location(tier, tier) + "/" for tier in TIERS]
            con.execute("SET allowed_directories = ?", [dirs])
            # DuckDB adds its spill directory to what may be read: make it this process's own (0700)
            self._spill = tempfile.TemporaryDirectory(prefix="loglake-query-")
            con.execute("SET temp_directory = ?", [self._spill.name])
            con.execute("SET enable_external_access = false")
            threads = con.execute("SELECT current_setting('threads')").fetchall()[0][0]
            self._shares = [con.cursor() for _ in range(min(MAX_SHARES, threads) - 1)]
            for share in self._shares:
                share.execute("SET TimeZone = 'UTC'")   # a session setting; the others are the database's
            con.execute("SET lock_configuration = true")
            self._con, self._keys = con, duck.KeyRegistry(con)
        return self._con

    def _run(self, files: Sequence[FileEntry], rows: Mapping[str, Sequence[tuple[int, int]]] | None, sql: str,
             params: Sequence[object], user_sql: bool, restrict: str = "TRUE") -> pa.Table:
        """``sql`` over ``logs``: a view for SQL a person wrote (it may begin with its own WITH); for the
        commands' own SQL, ``logs`` defined in the statement itself, so DuckDB opens each file's encrypted
        footer once to bind it rather than twice (the view's creation, then the query's: 0.9 of 3.6 s for a
        needle over 30 days at 300M records, where each of 360 row groups is a read_parquet of its own)."""
        if user_sql:
            return run_sql(self._view(files, rows), sql, params)
        return self._bound(files, rows, lambda con, parts: _arrow(
            con.execute(f"WITH logs AS ({self._relation(con, parts, restrict)}) {sql}", params)))

    def _select(self, files: Sequence[FileEntry], rows: Mapping[str, Sequence[tuple[int, int]]] | None,
                selection: Selection, restrict: str) -> pa.Table:
        def use(con: duckdb.DuckDBPyConnection, parts: list[str]) -> pa.Table:
            if len(parts) < SHARED_SCANS or not self._shares or not selection.shareable:
                return _arrow(con.execute(f"WITH logs AS ({self._relation(con, parts, restrict)}) {selection.sql}",
                                          selection.params))
            connections = [con, *self._shares]
            shares = [parts[i::len(connections)] for i in range(len(connections))]
            if self._pool is None:
                self._pool = ThreadPoolExecutor(len(connections), thread_name_prefix="loglake-query")
            runs = [self._pool.submit(lambda c, share: _arrow(c.execute(
                f"WITH logs AS ({self._relation(c, share, restrict)}) {selection.share_sql}", selection.params)),
                c, share)
                for c, share in zip(connections, shares) if share]
            try:
                wait(runs)  # every connection idle again before an error is raised (and the query perhaps retried)
            except BaseException:   # Ctrl-C, SIGTERM: stop the shares rather than wait for them
                for c in connections:
                    c.interrupt()
                wait(runs)
                raise
            return selection.merge([r.result() for r in runs])
        return self._bound(files, rows, use)

    def _view(self, files: Sequence[FileEntry], rows: Mapping[str, Sequence[tuple[int, int]]] | None = None,
              name: str = "logs") -> duckdb.DuckDBPyConnection:
        """The connection, its view ``name`` reading exactly ``files`` (only the row ranges ``rows`` gives
        for a file's catalog path, when it gives any). Not audited: callers audit what they run on it."""
        def create(con: duckdb.DuckDBPyConnection, parts: list[str]) -> duckdb.DuckDBPyConnection:
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {self._relation(con, parts)}")
            return con
        return self._bound(files, rows, create)

    def _bound(self, files: Sequence[FileEntry], rows: Mapping[str, Sequence[tuple[int, int]]] | None,
               use: Callable[[duckdb.DuckDBPyConnection, list[str]], _T]) -> _T:
        """``use(connection, parts)``, the scans (``duck.scan_parts``) reading ``files`` as ``_view`` says;
        when DuckDB finds a file without a column the scans take it to have, again with every file's columns
        looked at (see the module's docstring)."""
        by_key: dict[DataKey, list[str]] = defaultdict(list)
        ranges = {}
        # oldest first: a file older than a column is then the first of its key's list, which DuckDB
        # reads when the relation is bound (a BinderException, below) rather than when a query reaches it
        for f in sorted(files, key=lambda f: f.created_at):
            where = self.storage.location(f.tier, f.path)
            by_key[self.keyring.get(f.key_id)].append(where)
            if rows and f.path in rows:
                ranges[where] = rows[f.path]
        con = self._connection()
        assert self._keys is not None
        for attempt in (False, True):
            try:
                parts = duck.scan_parts(self._keys, by_key, ranges, probe=self._probe)
            except duckdb.Error as e:  # a file's columns could not be looked at
                raise _translate(e) from None
            try:
                return use(con, parts)
            except duckdb.BinderException as e:
                missing = _MISSING_COLUMN.search(str(e))
                if self._probe or attempt or not missing or missing.group(1) not in LOG_SCHEMA.names:
                    raise _translate(e) from None
                self._probe = True
            except duckdb.Error as e:
                raise _translate(e) from None
        raise AssertionError("unreachable")

    @staticmethod
    def _relation(con: duckdb.DuckDBPyConnection, parts: Sequence[str], restrict: str = "TRUE") -> str:
        """The view's relation (stored columns, record_id, semantic names) over the union of ``parts``, of
        the rows ``restrict`` covers."""
        scan = " UNION ALL ".join(parts)
        if not scan:
            con.register("_no_files", LOG_SCHEMA.empty_table())
            scan = "SELECT * FROM _no_files"
        return (f"SELECT *, {_SEMANTIC_SQL} FROM (SELECT *, {RECORD_ID_SQL} AS record_id FROM ({scan}) "
                f"WHERE {restrict})")


class Sandbox:
    """A DuckDB database of its own holding ``rows`` as the table ``logs``, and nothing else: no keys, no
    files, no extensions, configuration locked before any SQL arrives. SQL run in it reaches those rows
    alone, whatever it names (query.serve runs callers' SQL and live tails here)."""

    def __init__(self, rows: pa.Table, memory_limit: str = "1GB") -> None:
        # DuckDB may read its spill directory whatever else is refused: one of its own (0700), never shared
        self._spill = tempfile.TemporaryDirectory(prefix="loglake-sandbox-")
        con = duckdb.connect(config={"enable_external_access": False, "autoinstall_known_extensions": False,
                                     "autoload_known_extensions": False, "allow_community_extensions": False,
                                     "memory_limit": memory_limit, "threads": 1, "temp_directory": self._spill.name})
        con.execute("SET TimeZone = 'UTC'")
        con.register("_given", rows)
        # a table of its own, not a view of the Arrow object: the SQL sees a plain table
        con.execute("CREATE TABLE logs AS SELECT * FROM _given")
        con.unregister("_given")
        con.execute("SET lock_configuration = true")
        self._con = con

    def execute(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        return run_sql(self._con, sql, params)

    def first(self, sql: str, max_rows: int, timeout_s: float) -> tuple[pa.Table, bool]:
        """At most ``max_rows`` rows of ``sql``, and whether it had more; stopped after ``timeout_s``."""
        timer = threading.Timer(timeout_s, self._con.interrupt)
        timer.start()
        try:
            reader = self._con.execute(sql).fetch_record_batch(1024)
            batches, n = [], 0
            for batch in reader:
                batches.append(batch)
                n += batch.num_rows
                if n > max_rows:
                    break
            table = pa.Table.from_batches(batches, reader.schema)
        except duckdb.InterruptException:
            raise QueryError(f"the SQL ran longer than {timeout_s:g} s and was stopped") from None
        except duckdb.Error as e:
            raise _translate(e) from None
        finally:
            timer.cancel()
        return table.slice(0, max_rows), table.num_rows > max_rows

    def close(self) -> None:
        self._con.close()
        self._spill.cleanup()


class Result:
    """A statement's rows, fetched: the Python API hands out results, never the connection itself."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self._rows: list[tuple[Any, ...]] | None = None
        self._next = 0

    def arrow(self) -> pa.Table:
        return self.table

    fetch_arrow_table = arrow

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows = self._all()[self._next:]
        self._next += len(rows)
        return rows

    def fetchone(self) -> tuple[Any, ...] | None:
        rows = self._all()
        if self._next >= len(rows):
            return None
        self._next += 1
        return rows[self._next - 1]

    def _all(self) -> list[tuple[Any, ...]]:
        if self._rows is None:
            # as DuckDB's own fetchall does: Python datetimes stop at microseconds (arrow() keeps the ns)
            columns = [(c.cast(pa.timestamp("us", c.type.tz), safe=False) if pa.types.is_timestamp(c.type)
                        and c.type.unit == "ns" else c).to_pylist() for c in self.table.columns]
            self._rows = list(zip(*columns)) if columns else []
        return self._rows


class AuditedConnection:
    """What ``connect`` returns: ``execute`` (and its alias ``sql``) runs one read-only statement over
    ``logs``, recorded in the audit trail before it runs and its outcome after, and returns its rows."""

    def __init__(self, lake: Lake, files: Sequence[FileEntry]) -> None:
        self._lake, self._files = lake, files

    def execute(self, sql: str, params: Sequence[object] | None = None) -> Result:
        return Result(self._lake.query(self._files, sql, params or (), what={"command": "query.connect (Python API)"},
                                       user_sql=True))

    sql = execute

    def close(self) -> None:
        self._lake.close()

    def __enter__(self) -> AuditedConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(config_path: str | None = None, env: dict[str, str] | None = None) -> AuditedConnection:
    """A connection with the view ``logs`` over every stored file of every tier; every statement run on
    it is in the audit trail."""
    lake = Lake(config_path, env)
    try:
        return AuditedConnection(lake, lake.catalog.files())
    except BaseException:
        lake.close()
        raise


def run_sql(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] = ()) -> pa.Table:
    """Run SQL and fetch the result as Arrow, turning DuckDB's errors into one actionable sentence."""
    try:
        return _arrow(con.execute(sql, params))
    except duckdb.Error as e:
        raise _translate(e) from None


def _arrow(result: duckdb.DuckDBPyConnection) -> pa.Table:
    return result.to_arrow_table() if result.description else pa.table({})


def _translate(e: duckdb.Error) -> LoglakeError:
    """One of DuckDB's errors as one actionable sentence."""
    if isinstance(e, duckdb.InvalidInputException):
        text = str(e)
        if "AES tag" in text or "encrypted" in text:
            return EncryptionKeyError("stored files cannot be decrypted with the configured key; "
                                      "point [aggregator] key_file at the key they were written with")
        if "schema mismatch" in text:
            return StoredColumnsDiffer(f"stored files differ in their columns ({duck.first_line(e)}); "
                                       "run the query again")
        if "Parquet file" in text or "magic bytes" in text:
            return StorageError(f"a stored file is unreadable ({duck.first_line(e)}); "
                                "run 'loglake-aggregator verify' and restore it from backup")
    elif isinstance(e, duckdb.BinderException):
        missing = _MISSING_COLUMN.search(str(e))
        if missing:
            return QueryError(f"unknown column {missing.group(1)!r}: the logs view has {_VIEW_COLUMNS_TEXT}")
    elif isinstance(e, duckdb.IOException):
        return StorageError(f"a stored file cannot be read ({duck.first_line(e)}); "
                            "run 'loglake-aggregator verify' and restore it from backup")
    return QueryError(f"query failed: {duck.first_line(e)}")
