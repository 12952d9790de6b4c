"""loglake-aggregator: consume batches into encrypted Parquet; manage certificates and topics."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from aggregator import certs, compliance, config, keys
from aggregator.audit import AuditLog
from aggregator.errors import EncryptionKeyError
from aggregator.catalog import open_catalog
from aggregator.compaction import Compactor, Report
from aggregator.consume import Aggregator, Periodic
from aggregator.metrics import serve
from aggregator.retention import Remover
from aggregator.source import Source
from aggregator.spool import SpoolSource
from aggregator.storage import Storage
from schemas.config import version
from schemas import completion, jsonlog
from schemas.errors import ConfigError, LoglakeError, sentence

log = logging.getLogger("loglake.aggregator")


def _source(settings: config.Settings) -> Source:
    if settings.transport.kafka is not None:
        from aggregator.kafka import KafkaSource
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


@dataclass
class RetentionTotals:
    rows_deleted: int = 0
    files_deleted: int = 0
    files_rewritten: int = 0
    keys_destroyed: int = 0

    def add(self, results: list[dict]) -> None:
        for result in results:
            self.rows_deleted += result["rows_deleted"]
            self.files_deleted += result["files_deleted"]
            self.files_rewritten += result["files_rewritten"]
            self.keys_destroyed += len(result["keys_destroyed"])


def _apply_retention(remover: Remover) -> list[dict]:
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


async def _topics(args: argparse.Namespace) -> None:
    settings = config.load(args.config)
    kafka = settings.transport.kafka
    if kafka is None:
        raise ConfigError("no [kafka] section in the config: the spool transport needs no topic")
    from aggregator.kafka import ensure_topic
    created = await ensure_topic(kafka, settings.aggregator.tls_cert_file, settings.aggregator.tls_key_file)
    print(f"topic {kafka.topic}: {'created with ' + str(kafka.partitions) + ' partitions' if created else 'exists'}")


def _keys(args: argparse.Namespace) -> None:
    cfg = config.load(args.config).aggregator
    catalog = open_catalog(cfg)
    audit = AuditLog.of(cfg, catalog)
    try:
        ring = keys.KeyRing(catalog, keys.master_for(cfg))
        if args.action == "rotate":
            if not args.new_key_file:
                raise ConfigError("keys rotate needs --new-key-file PATH (a new file for the new master key)")
            audit.ready()
            new = keys.new_master_file(args.new_key_file)
            count = ring.rotate(new)
            audit.append("keys-rotate", {"event": "master key rotated", "master_key": new.key_id,
                                         "previous": keys.master_for(cfg).key_id, "data_keys_rewrapped": count})
            print(f"rewrapped {count} data keys under {new.key_id}; point [aggregator] key_file at {args.new_key_file} "
                  "and keep the old key file until every aggregator and query host uses the new one")
        elif args.action == "destroy":
            if not args.key_id:
                raise ConfigError("keys destroy needs the KEY_ID to destroy")
            _destroy_key(config.load(args.config), ring, args.key_id, args.force)
        else:
            retired = catalog.retired_data_keys()
            for key_id, scope, master_id, destroyed in catalog.data_key_list():
                state = ("destroyed" if destroyed else f"retired ({retired[key_id]}), wrapped by {master_id}"
                         if key_id in retired else f"live, wrapped by {master_id}")
                print(f"{key_id}  {scope}  {state}")
    finally:
        catalog.close()


def _destroy_key(settings: config.Settings, ring: keys.KeyRing, key_id: str, force: bool) -> None:
    """Destroy a data key by hand. Files still encrypted with it go with it, but only with --force, and
    never files under a legal hold."""
    if ring.catalog.data_key(key_id) is None:
        raise ConfigError(f"there is no data key {key_id}; see 'loglake-aggregator keys list'")
    remover = Remover.open(settings, ring.master)
    try:
        plan = remover.key_destruction_plan(key_id)
        files = [d.entry for d in plan.decisions]
        if files and not force:
            raise ConfigError(f"data key {key_id} still encrypts {len(files)} files ({sum(f.rows for f in files)} "
                              f"records, e.g. {files[0].tier} {files[0].path}); pass --force to destroy them with it")
        if not files:
            remover.audit.ready()
            remover.keyring.destroy(key_id)
            remover.audit.append("keys-destroy", {"event": "data key destroyed by hand", "key_id": key_id})
        else:
            for f in files:
                print(f"unreadable from now on: {f.tier} {f.path} ({f.rows} records)")
            if key_id not in remover.apply(plan)["keys_destroyed"]:
                raise EncryptionKeyError(f"data key {key_id} was retired, not destroyed: a file written with it "
                                         "meanwhile still needs it; run the command again")
    finally:
        remover.close()
    print(f"destroyed data key {key_id}: files written with it can no longer be read anywhere"
          + (f"; {len(files)} files and their records removed from the lake" if files else ""))


def _certs(args: argparse.Namespace) -> None:
    issued = certs.generate(args.out, force=args.force)
    for name, files in issued.items():
        print(f"{name}: {files.cert} {files.key}")


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
    jsonlog.setup(args.log_level or ("INFO" if args.command in (None, "run") else "WARNING"))
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
        print(f"loglake-aggregator: {sentence(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
