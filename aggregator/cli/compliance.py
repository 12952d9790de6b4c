"""The compliance commands of loglake-aggregator: retention, erase, hold, verify, report.

Every change they make (and every key rotation or destruction, see cli) is in
the audit trail; ``verify`` checks the files, the trail and completeness, and
``report`` puts it all in a document an auditor can read without the tool.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from aggregator import config
from aggregator.retention import RemovalPlan, Remover
from aggregator.verify import Finding, Verification, verification
from lake import keys
from lake.audit import actor
from lake.catalog.base import open_catalog
from lake.selector import Selector, format_time, parse_time
from runtime.errors import ConfigError
from runtime.progress import Progress


def emit(args: argparse.Namespace, lines: list[str], summary: dict[str, Any]) -> None:
    """What a command did: its lines for a person, or with ``--format json`` one JSON object for a script."""
    if getattr(args, "format", "text") == "json":
        sys.stdout.write(orjson.dumps(summary, default=str).decode() + "\n")
    else:
        for line in lines:
            print(line)


def progress_of(args: argparse.Namespace) -> Progress:
    """A bar on stderr when it is a terminal (``--progress``/``--no-progress`` decide otherwise)."""
    return Progress(enabled=getattr(args, "progress", None))


@contextmanager
def opened(args: argparse.Namespace) -> Iterator[tuple[config.Settings, Remover]]:
    settings = config.load(args.config)
    remover = Remover.open(settings, keys.master_for(settings.aggregator))
    remover.progress = progress_of(args)
    try:
        yield settings, remover
    finally:
        remover.close()


def _selector(args: argparse.Namespace) -> Selector:
    return Selector(namespace=args.namespace, pod=args.pod, container=args.container,
                    since_ns=parse_time(args.since) if args.since else None,
                    until_ns=parse_time(args.until) if args.until else None)


def _apply_or_show(remover: Remover, plan: RemovalPlan, dry_run: bool) -> tuple[list[str], dict[str, Any]]:
    lines = plan.lines()
    summary: dict[str, Any] = {"plan": plan.summary(), "dry_run": dry_run, "result": None}
    if dry_run:
        return [*lines, "dry run: nothing was changed"], summary
    result = remover.apply(plan)
    summary["result"] = result.record()
    lines.append(f"done: {result.rows_deleted} records deleted; {result.files_deleted} files deleted, "
                 f"{result.files_rewritten} rewritten, {result.files_reencrypted} re-encrypted; "
                 f"keys destroyed: {', '.join(result.keys_destroyed) or 'none'}")
    if result.pending_erasure is not None:
        lines.append(f"erasure request {result.pending_erasure} stays pending: records a legal hold keeps are "
                     "erased once the hold is released (at the release, or the next retention run)")
    if result.keys_retired:
        lines.append(f"not destroyed yet (a held file still needs them; destroyed by the first run after the hold "
                     f"is released): {', '.join(result.keys_retired)}; until then a backup copy written with "
                     "them can still be opened with the master key")
    return lines, summary


def retention(args: argparse.Namespace) -> None:
    with opened(args) as (_, remover):
        lines, summary = _apply_or_show(remover, remover.retention_plan(), args.dry_run)
        if not args.dry_run:
            more, summary["pending_erasures"] = _finish_pending(remover)
            lines += more
    emit(args, lines, summary)


def _finish_pending(remover: Remover) -> tuple[list[str], list[dict[str, Any]]]:
    results = remover.finish_pending_erasures()
    return [f"pending erasure {r.pending_erasure}: {r.rows_deleted} records deleted"
            + (", some still kept by another hold" if r.kept_by_hold else ", finished")
            for r in results], [r.record() for r in results]


def erase(args: argparse.Namespace) -> None:
    selector = _selector(args)
    if selector == Selector():
        raise ConfigError("erase needs a selector: --namespace, --pod, --container, --since or --until")
    with opened(args) as (_, remover):
        emit(args, *_apply_or_show(remover, remover.erasure_plan(selector, args.reason), args.dry_run))


def hold(args: argparse.Namespace) -> None:
    with opened(args) as (_, remover):
        catalog, audit = remover.catalog, remover.audit
        if args.action == "add":
            selector = _selector(args)
            if not args.reason:
                raise ConfigError("hold add needs --reason (the case or matter it is for)")
            audit.ready()
            hold_id = catalog.add_hold(selector, args.reason, actor())
            audit.append("hold-add", {"hold": hold_id, "selector": selector.describe(), "reason": args.reason})
            print(f"hold {hold_id} placed on {selector.describe()}")
        elif args.action == "release":
            if args.id is None or not args.reason:
                raise ConfigError("hold release needs the hold ID and --reason")
            audit.ready()
            released = catalog.release_hold(args.id, actor(), args.reason)
            if released is None:
                raise ConfigError(f"there is no hold {args.id}; see 'loglake-aggregator hold list'")
            audit.append("hold-release", {"hold": args.id, "selector": released.selector.describe(),
                                          "reason": args.reason})
            print(released.describe())
            for line in _finish_pending(remover)[0]:
                print(line)
        else:
            for h in catalog.holds(include_released=args.all):
                print(h.describe())


def verify(args: argparse.Namespace) -> int:
    v = _malformed_catalog(config.load(args.config))
    if v is None:
        with opened(args) as (settings, remover):
            v = verification(settings, remover.catalog, remover)
    emit(args, v.lines(), v.summary())
    return 0 if v.ok else 1


def _malformed_catalog(settings: config.Settings) -> Verification | None:
    """Every damaged catalog value as a finding (the other checks would stop at the first one they read),
    or None when there is none."""
    catalog = open_catalog(settings.aggregator)
    try:
        bad = catalog.malformed()
    finally:
        catalog.close()
    if not bad:
        return None
    where = str(settings.aggregator.catalog_path)
    return Verification(0, [Finding("malformed", "catalog", where, p.removeprefix(f"catalog {where}: ")) for p in bad],
                        0, ["not checked: the catalog holds malformed values (above)"], 0, [])


def report(args: argparse.Namespace) -> None:
    from aggregator.report import build, to_markdown
    with opened(args) as (settings, remover):
        since = parse_time(args.since)
        doc = build(settings, remover, verification(settings, remover.catalog, remover), since)
    out: Path = args.out
    out.write_text(to_markdown(doc))
    out.with_suffix(".json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    emit(args, [f"wrote {out} and {out.with_suffix('.json')} (period from {format_time(since)})"],
         {"markdown": str(out), "json": str(out.with_suffix(".json")), "period_from": format_time(since),
          "verify_ok": doc["verify"]["ok"]})
