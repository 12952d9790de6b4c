"""loglake-query: the stored logs of every tier, by trace, container, time, level or text; or any SQL.

    loglake-query trace 4bf92f3577b34da6a3ce929d0e0e4736
    loglake-query logs -n shop --pod 'checkout-*' --level warn+ --since 15m --grep timeout
    loglake-query tail -f -n shop --container nginx
    loglake-query stats --since 24h --by namespace,level
    loglake-query sql "SELECT container, count(*) FROM logs GROUP BY ALL"
    loglake-query export --trace 4bf9… --out case.zip && loglake-query verify-export case.zip
    loglake-query --server https://loglake.example:3100 logs -n shop --since 1h
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from lake import config as agg_config
from lake.selector import LEVEL_NAME, Selector, parse_levels, parse_time
from query import config as query_config
from query import export, output, plan
from query.connect import EVERYTHING, IN_TIME_ORDER, NEWEST_FIRST, RECORD_COLUMNS_SQL, Lake, Selection
from query.filters import Filters, trace_id
from query.follow import follow
from runtime import completion
from runtime.config import version
from runtime.durable import write_durably
from runtime.errors import QueryError
from runtime.progress import Progress

LINE_COLUMNS = "time, namespace, pod, container, stream, severity_text AS level, trace_id, body"
TRACE_COLUMNS = "time, namespace, pod, container, severity_text AS level, span_id, body"
STATS_DIMENSIONS = {"namespace": "namespace", "pod": "pod", "container": "container", "level": LEVEL_NAME,
                    "hour": "date_trunc('hour', time)", "day": "date_trunc('day', time)"}


class Session:
    """One command's lake, plan and output settings, and its --explain report. (``query.serve.commands``
    runs the same commands for a caller of the service: its rows only, its identity in the audit trail.)"""

    restrict = EVERYTHING    # the rows the command may read: all of them, for whoever holds the master key

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.perf_counter()
        self.lake = Lake(args.config)
        cfg = query_config.load(args.config)
        self.tz = output.check_tz(args.tz or cfg.tz)
        self.cfg = cfg

    def close(self) -> None:
        self.lake.close()

    @property
    def command(self) -> str:
        return "loglake-query " + " ".join(self.args.argv)

    def run(self, chosen: plan.Plan, sql: str | Selection, params: Sequence[object] = (),
            user_sql: bool = False) -> pa.Table:
        what = self.what()
        if isinstance(sql, Selection):
            result = self.lake.select(chosen.files, sql, rows=chosen.row_ranges(), what=what, restrict=self.restrict)
        else:
            result = self.lake.query(chosen.files, sql, params, rows=chosen.row_ranges(), what=what,
                                     user_sql=user_sql, restrict=self.restrict)
        if self.args.explain:
            ms = (time.perf_counter() - self.started) * 1000
            print(f"plan: {chosen.describe()}; {result.num_rows} rows in {ms:.1f} ms", file=sys.stderr)
            for f in chosen.files[:50]:
                print(f"  {f.tier} {f.path} row groups {chosen.row_groups[f.path]}", file=sys.stderr)
            if len(chosen.files) > 50:
                print(f"  … and {len(chosen.files) - 50} more files", file=sys.stderr)
        return result

    def what(self) -> dict[str, Any]:
        """Who asked for what, as the audit trail records it."""
        return {"command": self.command, **({"output": str(self.args.output_file)} if self.args.output_file else {})}

    def summary(self, lines: list[str], doc: dict[str, object]) -> None:
        _summary(self.args, lines, doc)

    def emit(self, table: pa.Table) -> None:
        output.emit(table, self.args.format, self.args.output_file, self.tz)


def filters_of(args: argparse.Namespace, default_since: str | None = None) -> Filters:
    since = args.since if args.since is not None else default_since
    selector = Selector(namespace=args.namespace, pod=args.pod, container=args.container,
                        since_ns=None if since in (None, "all") else parse_time(since),
                        until_ns=parse_time(args.until) if args.until else None)
    return Filters(selector, levels=parse_levels(args.level) if args.level else (),
                   grep=args.grep, regex=args.regex, trace_id=getattr(args, "trace", None),
                   previous=getattr(args, "previous", False))


def _sql(s: Session) -> None:
    s.lake.require_data()
    s.emit(s.run(plan.everything(s.lake.catalog), s.args.query, [], user_sql=True))


def _trace(s: Session) -> None:
    s.lake.require_data()
    tid = trace_id(s.args.trace_id)  # stored ids are lowercase hex without dashes
    chosen = plan.trace(s.lake.catalog, tid)
    columns = RECORD_COLUMNS_SQL if s.args.output_file else TRACE_COLUMNS
    s.emit(s.run(chosen, Selection(columns, "trace_id = ?", (tid,), IN_TIME_ORDER)))


def _logs(s: Session) -> None:
    s.lake.require_data()
    f = filters_of(s.args, default_since=None if s.args.previous else "1h")  # --previous: any age, as kubectl
    where, params = f.where()
    columns = RECORD_COLUMNS_SQL if s.args.output_file else LINE_COLUMNS
    # the newest --limit lines, shown oldest first (newest first with --reverse), like `tail -n`
    result = s.run(plan.select(s.lake.catalog, f, s.lake.keyring.get),
                   Selection(columns, where, tuple(params), NEWEST_FIRST, s.args.limit or None, per_row=f.per_row))
    s.emit(result if s.args.reverse else output.reversed_rows(result))


def _tail(s: Session) -> None:
    if s.args.follow and not s.args.interval > 0:  # also NaN, which time.sleep refuses with a traceback
        raise QueryError(f"--interval {s.args.interval:g}: give a number of seconds above 0, e.g. 0.5")
    f = filters_of(s.args)
    fmt = s.args.format

    def show(rows: pa.Table, first: bool) -> None:
        output.write(rows, fmt, tz=s.tz, header=first and fmt == "csv")

    where, params = f.where()
    s.lake.audit("query", {"command": s.command, "sql": f"SELECT {LINE_COLUMNS} FROM logs WHERE {where}",
                           "parameters": [str(p) for p in params]})
    follow(s.lake, f, LINE_COLUMNS, s.args.lines, s.args.interval, show, follow_new=s.args.follow)


def _stats(s: Session) -> None:
    s.lake.require_data()
    f = filters_of(s.args, default_since="24h")
    dims = [d.strip() for d in s.args.by.split(",") if d.strip()]
    unknown = [d for d in dims if d not in STATS_DIMENSIONS]
    if unknown or not dims:
        raise QueryError(f"--by {s.args.by!r}: choose from {', '.join(STATS_DIMENSIONS)}")
    where, params = f.where()
    select = ", ".join(f"{STATS_DIMENSIONS[d]} AS {d}" for d in dims)
    s.emit(s.run(plan.select(s.lake.catalog, f, s.lake.keyring.get),
                 f"SELECT {select}, count(*) AS lines, sum(strlen(body)) AS bytes FROM logs WHERE {where} "
                 f"GROUP BY ALL ORDER BY ALL", params))


def _signing_key_path(config_path: str | None) -> Path:
    """The export signing key: ``[query] export_key_file``, else ``<data_dir>/keys/export-signing.key``
    (read from the config alone: no catalog or master key is needed)."""
    return (query_config.load(config_path).export_key_file
            or agg_config.load(config_path).aggregator.data_dir / "keys" / "export-signing.key")


def _public_key_file(key_path: Path, key: object) -> Path:
    """The signer's public key beside its private key, for whoever must check the archives."""
    pub = key_path.with_name(key_path.stem + ".pub.pem")
    if not pub.exists():
        write_durably(pub, export.public_pem(key), mode=0o644)  # type: ignore[arg-type]
    return pub


def _export(s: Session) -> None:
    if s.args.trace is None and s.args.since is None:
        raise QueryError("export needs --trace ID or --since TIME (with any other filters) to say what to export")
    s.lake.require_data()
    f = filters_of(s.args)
    where, params = f.where()
    selection = Selection(RECORD_COLUMNS_SQL, where, tuple(params), IN_TIME_ORDER, per_row=f.per_row)
    sql = selection.sql
    chosen = plan.select(s.lake.catalog, f, s.lake.keyring.get)
    sources = s.restrict.files(chosen.files)   # the manifest names only files that may hold readable rows
    key_path = _signing_key_path(s.args.config)
    key = export.load_signing_key(key_path, create=True)
    # two steps, the query over the chosen files and the archive: the bar shows which runs, and for how long
    with Progress(s.args.progress).phase(f"export: {len(sources)} files, "
                                         f"{sum(e.bytes for e in sources)} bytes", 2) as step:
        table = s.run(chosen, selection)
        step(0)
        query = {**s.what(), "filters": _filters_doc(f), "sql": sql, "parameters": [str(p) for p in params],
                 **({"restricted_to": s.restrict.sql} if s.restrict != EVERYTHING else {})}
        manifest = export.write(s.args.out, table, query, sources, key)
        step(0)
    public = _public_key_file(key_path, key)
    s.summary([f"exported {table.num_rows} records to {s.args.out}, signed by "
               f"{manifest['signer']['fingerprint']} (public key: {public}; check with verify-export "
               "--public-key)"],
              {"archive": str(s.args.out), "records": table.num_rows, "files": len(sources),
               "signer": manifest["signer"]["fingerprint"], "public_key": str(public)})


def _summary(args: argparse.Namespace, lines: list[str], doc: dict[str, object]) -> None:
    output.summary(args.format, lines, doc)


def _filters_doc(f: Filters) -> dict[str, object]:
    fields = {**f.selector.__dict__, **{k: v for k, v in f.__dict__.items() if k != "selector"}}
    return {k: v for k, v in fields.items() if v not in (None, (), False)}


def verify_export(args: argparse.Namespace) -> int:
    """Needs only the archive and a key to trust: no lake, catalog or master key (another machine)."""
    trusted = None
    if args.public_key:
        trusted = export.load_public_key(args.public_key)
    elif not args.trust_embedded_key:
        local = _signing_key_path(args.config)  # the signer's own machine: its key is not in the archive
        if local.exists():
            trusted = export.load_signing_key(local, create=False).public_key()
    v = export.verify(args.archive, trusted, trust_embedded=args.trust_embedded_key, max_bytes=args.max_bytes)
    _summary(args, [f"{args.archive}: intact, {v.rows} records, signed by {v.signer}"
                    + ("" if v.trusted else " (integrity only: checked against the key inside the archive, which "
                                            "says nothing about who signed it; pass --public-key for that)"),
                    f"query: {v.query.get('command')}"],
             {"archive": str(args.archive), "intact": True, "records": v.rows, "signer": v.signer,
              "trusted": v.trusted, "query": v.query.get("command")})
    return 0


def _count(text: str) -> int:
    """A count option (--limit, --lines): checked here, so a negative one is a usage line, not SQL's error."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} is negative; give 0 or more")
    return n


def _output_file(value: str) -> str:
    if value in output.FORMATS:  # kubectl habit: -o json; a file named "json" is never what was meant
        raise argparse.ArgumentTypeError(f"{value!r} is an output format: choose it with -o {value}, "
                                         "and give --output-file a file name (e.g. result.parquet)")
    return value


def _common(parser: argparse.ArgumentParser, *format_flags: str) -> argparse.ArgumentParser:
    completion.files(parser.add_argument(
        "--config", "-c", help="loglake TOML file (default: $LOGLAKE_CONFIG, else ./loglake.toml, "
                               "~/.config/loglake/loglake.toml, /etc/loglake/loglake.toml)"))
    parser.add_argument("--output", "-o", *format_flags, choices=output.FORMATS, dest="format",
                        help="table (default; cells over 120 characters end in …), wide (never cut), "
                             "json or jsonl (one object per line), csv")
    parser.add_argument("--tz", help="show times in this IANA time zone (default UTC, or [query] tz)")
    parser.add_argument("--output-file", type=_output_file, help="write the result to this Parquet file instead")
    parser.add_argument("--explain", action="store_true", help="print the files and row groups chosen (stderr)")
    parser.add_argument("--server", help="run the command through loglake-query serve at this https:// address "
                                         "(default $LOGLAKE_SERVER; unset: the local lake)")
    parser.add_argument("--token", help="bearer token for --server (default $LOGLAKE_TOKEN)")
    completion.files(parser.add_argument(
        "--cacert", help="CA certificate that signed the service's, for --server (default $LOGLAKE_CACERT)"))
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _filter_options(p: argparse.ArgumentParser, since_help: str) -> None:
    p.add_argument("--namespace", "-n", help="namespace glob")
    p.add_argument("--pod", help="pod glob, e.g. 'checkout-*'")
    p.add_argument("--container", help="container glob")
    p.add_argument("--level", help="trace|debug|info|warn|error|fatal, comma-separated; warn+ = warn and above")
    p.add_argument("--since", help=f"a duration ago (15m, 1h30m, 2d12h) or an RFC 3339 time; 'all' for no bound "
                                   f"({since_help})")
    p.add_argument("--until", help="a duration ago (15m, 1h30m, 2d12h) or an RFC 3339 time (default now)")
    p.add_argument("--grep", help="only lines whose body contains this text")
    p.add_argument("--regex", action="store_true", help="--grep is a regular expression (RE2 syntax)")


EXAMPLES: dict[str, tuple[str, ...]] = {
    "sql": (
        'loglake-query sql "SELECT container, count(*) FROM logs GROUP BY ALL"',
        'loglake-query sql "SELECT time, body FROM logs WHERE severity_number >= 17 ORDER BY time DESC LIMIT 20"',
        'loglake-query -o csv sql "SELECT namespace, count(*) FROM logs GROUP BY ALL" > counts.csv',
    ),
    "trace": (
        'loglake-query trace 4bf92f3577b34da6a3ce929d0e0e4736',
        'loglake-query trace 4BF92F35-77B3-4DA6-A3CE-929D0E0E4736 -o json --explain',
    ),
    "logs": (
        "loglake-query logs -n shop --pod 'checkout-*' --level warn+ --since 15m",
        'loglake-query logs --container nginx --since 2026-11-24T10:00:00Z --until 1h --grep timeout',
        "loglake-query logs --grep 'status=5\\d\\d' --regex --since 1h30m -o wide",
        "loglake-query logs -n shop --pod checkout-5d8f7-abcde --container app --previous",
    ),
    "tail": (
        'loglake-query tail -f -n payments --level error',
        'loglake-query tail --lines 50 --container nginx -o json',
    ),
    "stats": (
        'loglake-query stats --since 24h --by namespace,level',
        'loglake-query stats --since 7d --by day -o csv',
    ),
    "export": (
        'loglake-query export --trace 4bf92f3577b34da6a3ce929d0e0e4736 --out case-1234.zip',
        'loglake-query export -n payments --since 2026-11-01T00:00:00Z --until 2026-11-08T00:00:00Z --out case.zip',
    ),
    "serve": (
        'loglake-query serve --config /etc/loglake/loglake.toml',
    ),
    "token": (
        'loglake-query token create alice      # prints the token once; roles name it token:alice',
        'loglake-query token list',
        'loglake-query token revoke alice',
    ),
    "verify-export": (
        'loglake-query verify-export case.zip --public-key export-signing.pub.pem',
        'loglake-query verify-export case.zip --trust-embedded-key   # integrity only',
    ),
}


def _examples(command: str) -> dict[str, Any]:
    """Help with examples under it, as kubectl's subcommands have."""
    return {"epilog": "examples:\n" + "\n".join("  " + e for e in EXAMPLES[command]),
            "formatter_class": argparse.RawDescriptionHelpFormatter}


def parser() -> argparse.ArgumentParser:
    top = _common(argparse.ArgumentParser(prog="loglake-query", description=__doc__, allow_abbrev=False,
                                          formatter_class=argparse.RawDescriptionHelpFormatter), "--format", "-f")
    top.set_defaults(format="table")
    top.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    # Options may also follow the subcommand; SUPPRESS keeps a subcommand from resetting them.
    # After the subcommand, -f is tail's --follow; the format is spelled --format there.
    common = _common(argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS), "--format")
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sql", parents=[common], **_examples("sql"),
                       help="run DuckDB SQL against the view 'logs'")
    p.add_argument("query")
    p = sub.add_parser("trace", parents=[common], **_examples("trace"),
                       help="every line of a trace, across services, in time order")
    p.add_argument("trace_id", help="32 hex digits (upper case and dashes are fine)")
    p = sub.add_parser("logs", parents=[common], **_examples("logs"),
                       help="lines matching filters (newest --limit, oldest first)")
    _filter_options(p, "default 1h")
    p.add_argument("--limit", type=_count, default=1000, help="at most this many lines, the newest (0: all)")
    p.add_argument("--reverse", action="store_true", help="newest first")
    p.add_argument("--previous", "-p", action="store_true",
                   help="the lines of each container's run before its latest (restart count one lower), like "
                        "kubectl logs --previous; any age unless --since is given")
    p = sub.add_parser("tail", parents=[common], **_examples("tail"),
                       help="the last lines, and with -f new ones as they land")
    _filter_options(p, "default: all")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until interrupted")
    p.add_argument("--lines", type=_count, default=10, help="how many of the last lines to show first")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between checks for new data")
    p = sub.add_parser("stats", parents=[common], **_examples("stats"),
                       help="lines and bytes by namespace, container, level, hour")
    _filter_options(p, "default 24h")
    p.add_argument("--by", default="namespace,container,level,hour",
                   help=f"comma-separated dimensions: {', '.join(STATS_DIMENSIONS)}")
    p = sub.add_parser("export", parents=[common], **_examples("export"),
                       help="a signed case archive of matching records")
    _filter_options(p, "this or --trace is required")
    p.add_argument("--trace", help="export this trace (32 hex digits)")
    p.add_argument("--out", type=Path, required=True, help="the archive to write, e.g. case.zip")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress on stderr (default: only when stderr is a terminal)")
    p = sub.add_parser("verify-export", parents=[common], **_examples("verify-export"),
                       help="check a case archive's digests and signature")
    p.add_argument("archive", type=Path)
    p.add_argument("--public-key", type=Path, help="the signer's public key (PEM) to trust, from the signer")
    p.add_argument("--trust-embedded-key", action="store_true",
                   help="with no trusted key: check integrity only, against the key inside the archive")
    p.add_argument("--max-bytes", type=int, default=export.DEFAULT_MAX_BYTES,
                   help="largest record data to read (uncompressed bytes; default 4 GiB)")
    p = sub.add_parser("serve", parents=[common], **_examples("serve"),
                       help="serve the lake over HTTPS to a team, with Loki's API for Grafana ([serve])")
    p = sub.add_parser("token", parents=[common], **_examples("token"),
                       help="bearer tokens for serve: create (printed once), list, revoke")
    p.add_argument("action", choices=("create", "list", "revoke"))
    p.add_argument("name", nargs="?", help="the identity token:NAME that [[serve.roles]] members name")
    completion.add_command(sub)
    return top


COMMANDS = {"sql": _sql, "trace": _trace, "logs": _logs, "tail": _tail, "stats": _stats, "export": _export}
