"""loglake-aggregator: consume batches into encrypted Parquet; manage certificates and topics."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from pathlib import Path

from aggregator import config
from aggregator.cli import compliance
from aggregator.cli.keys import _certs, _keys
from aggregator.cli.topics import _topics
from aggregator.compaction import Compactor, Report
from aggregator.consume import Aggregator, Periodic
from aggregator.metrics import serve
from aggregator.retention import Removal, Remover, RetentionTotals
from aggregator.source.base import Source
from aggregator.source.spool import SpoolSource
from lake import keys
from lake.catalog.base import open_catalog
from lake.storage import Storage
from runtime import completion, logs
from runtime.config import version
from runtime.errors import LoglakeError, exit_with

log = logging.getLogger("loglake.aggregator")


def _source(settings: config.Settings) -> Source:
    if settings.transport.kafka is not None:
        from aggregator.source.kafka import KafkaSource
        return KafkaSource(settings.transport.kafka, settings.aggregator)
    return SpoolSource(settings.transport.spool)


async def _run(args: argparse.Namespace) -> None:
    settings = config.load(args.config)
    cfg = settings.aggregator
    catalog = open_catalog(cfg)
    keyring = keys.KeyRing(catalog, keys.master_for(cfg, create=True))
    compaction, retention = Report(), RetentionTotals()
    jobs = (Periodic("compaction", settings.tiers.compact_interval_s, lambda: Compactor.open(settings, keyring.master),
                     lambda c, stop: compaction.add(c.run(None, stop)), lambda c: c.close()),
            Periodic("retention", settings.retention.interval_s, lambda: Remover.open(settings, keyring.master),
                     lambda r, stop: retention.add(_apply_retention(r)), lambda r: r.close()))
    agg = Aggregator(cfg, _source(settings), catalog, keyring, Storage(cfg, settings.tiers), jobs)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agg.stop)
    server = await serve(agg, compaction, retention, cfg.metrics_address) if cfg.metrics_address else None
    log.info("aggregator started", extra={"transport": settings.transport.name, "data_dir": str(cfg.data_dir),
                                          "master_key": keyring.master.key_id})
    try:
        await agg.run(once=args.once)
    finally:
        catalog.close()
        if server is not None:
            server.close()


def _apply_retention(remover: Remover) -> list[Removal]:
    results = remover.finish_pending_erasures()
    plan = remover.retention_plan()
    if any(d.action in ("delete", "rewrite") for d in plan.decisions) or remover.retired_ready():
        results.append(remover.apply(plan))
    return results


def _compact(args: argparse.Namespace) -> None:
    settings = config.load(args.config)
    compactor = Compactor.open(settings, keys.master_for(settings.aggregator))
    try:
        report: Report = compactor.run(progress=compliance.progress_of(args))
    finally:
        compactor.close()
    tiers = ", ".join(f"{n} {t}" for t, n in sorted(report.by_tier.items())) or "nothing to do"
    compliance.emit(args, [f"compacted {report.files_in} files ({report.bytes_in} bytes) into {report.files_out} "
                           f"({report.bytes_out} bytes; {tiers}), {report.rows} rows in {report.seconds:.2f} s; "
                           f"deleted {report.deleted} replaced files"], dataclasses.asdict(report))


def _selector_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--namespace", "-n", help="namespace glob")
    p.add_argument("--pod", help="pod glob")
    p.add_argument("--container", help="container glob")
    p.add_argument("--since", help="from (15m, 1h30m, 7d or an RFC 3339 time)")
    p.add_argument("--until", help="until (15m, 1h30m, 7d or an RFC 3339 time)")


def _common_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    completion.files(parser.add_argument("--config", "-c", help="loglake TOML file (LOGLAKE_* variables override it)"))
    parser.add_argument("--log-level", help="DEBUG, INFO (default of run), WARNING (default of the other "
                                            "commands), ERROR")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _common_options(argparse.ArgumentParser(prog="loglake-aggregator", description=__doc__))
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    # Options may also follow the subcommand; SUPPRESS keeps a subcommand from
    # resetting what was given before it.
    common = _common_options(argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS))
    parser.add_argument("--once", action="store_true",
                        help="consume until caught up, make everything durable, exit")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", parents=[common], help="consume (the default)")
    run.add_argument("--once", action="store_true", default=argparse.SUPPRESS,
                     help="consume until caught up, make everything durable, exit")
    c = sub.add_parser("certs", parents=[common], help="create a development CA and certificates")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--force", action="store_true", help="replace existing certificates")
    # long jobs: a progress bar on a terminal, and a summary as text or one JSON object
    job = argparse.ArgumentParser(add_help=False)
    job.add_argument("--format", choices=["text", "json"], default="text",
                     help="summary on stdout: text (default) or one JSON object for scripts")
    job.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="progress bar on stderr (default: only when stderr is a terminal)")
    sub.add_parser("compact", parents=[common, job], help="compact hot files into warm and warm into cold, now")
    sub.add_parser("verify", parents=[common, job], help="check files against the catalog, the audit trail, and "
                                                         "completeness (byte ranges never stored)")
    r = sub.add_parser("retention", parents=[common, job], help="apply the retention policy now")
    r.add_argument("--dry-run", action="store_true", help="list what would go (files, rows, bytes, per rule)")
    e = sub.add_parser("erase", parents=[common, job],
                       help="remove matching records from every tier (erasure request)")
    _selector_options(e)
    e.add_argument("--reason", required=True, help="why (the request's reference); goes into the audit trail")
    e.add_argument("--dry-run", action="store_true", help="list what would go")
    h = sub.add_parser("hold", parents=[common], help="legal holds: add, list, release")
    h.add_argument("action", choices=["add", "list", "release"])
    h.add_argument("id", nargs="?", type=int, help="release: the hold's id")
    _selector_options(h)
    h.add_argument("--reason", help="add: the case it is for; release: why it ends")
    h.add_argument("--all", action="store_true", help="list: released holds too")
    rp = sub.add_parser("report", parents=[common, job], help="compliance report (Markdown and JSON)")
    rp.add_argument("--since", default="30d", help="period start: 30d, or an RFC 3339 time")
    rp.add_argument("--out", type=Path, default=Path("report.md"), help="Markdown file; the JSON goes beside it")
    t = sub.add_parser("topics", parents=[common], help="create the Kafka topic")
    t.add_argument("action", choices=["create"])
    k = sub.add_parser("keys", parents=[common], help="list, rotate the master key, destroy a data key")
    k.add_argument("action", choices=["list", "rotate", "destroy"])
    k.add_argument("key_id", nargs="?", help="the data key to destroy")
    k.add_argument("--new-key-file", type=Path, help="rotate: where to create the new master key")
    k.add_argument("--force", action="store_true",
                   help="destroy: also when files still need the key (they are listed, then removed)")
    completion.add_command(sub)
    args = parser.parse_args(argv)
    if args.command == "completion":
        print(completion.script(parser, args.shell), end="")
        return 0
    # the daemon logs what it does; a one-off command prints its summary and logs only what goes wrong
    logs.setup(args.log_level or ("INFO" if args.command in (None, "run") else "WARNING"))
    try:
        if args.command == "certs":
            _certs(args)
        elif args.command == "topics":
            asyncio.run(_topics(args))
        elif args.command == "keys":
            _keys(args)
        elif args.command == "compact":
            _compact(args)
        elif args.command == "verify":
            return compliance.verify(args)
        elif args.command in ("retention", "erase", "hold", "report"):
            getattr(compliance, args.command)(args)
        else:
            asyncio.run(_run(args))
    except (LoglakeError, OSError) as e:
        if args.debug:
            raise
        return exit_with("loglake-aggregator", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
