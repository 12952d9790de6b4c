"""The CLI's commands for a caller of the service (``loglake-query --server``): ``POST /api/v1/run``.

The request names a command and its options by their CLI names (``{"command": "logs", "options":
{"namespace": "shop", "since": "1h"}}``); they are parsed by the CLI's own parser, so a value is checked
exactly as it is locally, and run by the CLI's own command over the caller's rows (``ServedSession``).
The answer is the command's table as an Arrow IPC stream, which the client prints as it would locally;
an export answers the signed archive itself. ``sql`` runs in the sandbox (query.serve.sandbox).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pyarrow as pa

from query import commands as local
from query.connect import Lake, Restriction
from query.remote import FOLLOW, OPTIONS
from query.serve import loki, sandbox, tail
from query.serve.config import ServeConfig
from runtime.errors import QueryError

PERMISSION = {"logs": "read", "trace": "read", "stats": "read", "export": "export", "sql": "sql"}


@dataclass
class Ran:
    table: pa.Table | None = None
    archive: bytes | None = None
    summary: dict[str, object] = field(default_factory=dict)
    truncated: bool = False

    def body(self) -> bytes:
        if self.archive is not None:
            return self.archive
        assert self.table is not None
        return tail.ipc_bytes(self.table)

    def namespaces(self) -> dict[str, int]:
        return loki.namespaces_of(self.table) if self.table is not None else {}


class ServedSession(local.Session):
    """A CLI command's session for a caller: its rows only, its identity in the audit trail, its output
    kept for the answer rather than printed."""

    def __init__(self, lake: Lake, args: argparse.Namespace, restrict: Restriction, what: dict[str, Any]) -> None:
        self.args, self.lake, self.restrict, self._what = args, lake, restrict, what
        self.started = time.perf_counter()
        self.tz = "UTC"
        self.ran = Ran()

    def what(self) -> dict[str, Any]:
        return self._what

    def summary(self, lines: list[str], doc: dict[str, object]) -> None:
        self.ran.summary = doc

    def emit(self, table: pa.Table) -> None:
        self.ran.table = table

    def close(self) -> None:
        pass


def _raise(message: str) -> NoReturn:
    raise QueryError(f"bad options: {message}")


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    top = local.parser()
    subs = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices
    for p in (top, *subs.values()):
        p.error = _raise   # a usage error is a 400, never the process's exit
    return top, subs


def namespace_of(command: str, options: Mapping[str, object], config_path: str | None) -> argparse.Namespace:
    """``options`` as the CLI's parser reads them for ``command``; only those in ``OPTIONS`` are taken."""
    if command not in OPTIONS:
        raise QueryError(f"command {command!r} is not run by the service: choose from {', '.join(OPTIONS)}")
    unknown = sorted(set(options) - set(OPTIONS[command]))
    if unknown:
        raise QueryError(f"{command} does not take {', '.join(unknown)} through the service")
    top, subs = _parser()
    actions = {a.dest: a for a in subs[command]._actions}
    argv, positional = [command], []
    for dest, value in options.items():
        action = actions[dest]
        if dest == "output_file":
            continue
        if not action.option_strings:
            positional.append(str(value))
        elif isinstance(action, argparse._StoreTrueAction):
            if value is True:
                argv.append(action.option_strings[-1])
            elif value not in (False, None):
                raise QueryError(f"{dest} is true or false")
        elif value is not None:
            argv.append(f"{max(action.option_strings, key=len)}={value}")
    if command == "export":
        argv.append("--out=archive.zip")
    try:
        args = top.parse_args([*argv, "--", *positional] if positional else argv)
    except SystemExit:   # --help or --version in a value: not a query
        raise QueryError(f"the options of {command} cannot be parsed") from None
    args.argv, args.config = argv, config_path
    args.output_file = Path("(the client's file)") if options.get("output_file") else None
    args.explain = False
    return args


def run(lake: Lake, what: dict[str, Any], restrict: Restriction, cfg: ServeConfig, config_path: str | None,
        command: str, options: Mapping[str, object]) -> Ran:
    args = namespace_of(command, options, config_path)
    if command == "logs" and not 0 < args.limit <= cfg.max_limit:
        raise QueryError(f"--limit {args.limit}: through the service give 1 to {cfg.max_limit} ([serve] max_limit)")
    if command == "sql":   # over every row the caller may read, up to [serve] sql_max_input_rows
        table, truncated, _ = sandbox.table(lake, what, restrict, cfg, args.query)
        return Ran(table=table, truncated=truncated)
    session = ServedSession(lake, args, restrict, {**what, "command": f"serve {' '.join(args.argv)}"})
    if command == "export":
        with tempfile.TemporaryDirectory(prefix="loglake-export-") as tmp:
            args.out = Path(tmp) / "archive.zip"
            local.COMMANDS[command](session)
            session.ran.archive = args.out.read_bytes()
            session.ran.summary.pop("archive", None)
            session.ran.summary.pop("public_key", None)   # a path on the service's machine
        return session.ran
    local.COMMANDS[command](session)
    return session.ran


def follow_filter(options: Mapping[str, object], config_path: str | None) -> tuple[str, list[object]]:
    """The SQL condition of ``tail -f``'s filters (the options of ``logs``, checked by its parser)."""
    unknown = sorted(set(options) - set(FOLLOW))
    if unknown:
        raise QueryError(f"tail -f does not take {', '.join(unknown)} through the service")
    values = {k: (v == "true" if k == "regex" else v) for k, v in options.items()}
    where, params = local.filters_of(namespace_of("logs", values, config_path)).where()
    return where, params
