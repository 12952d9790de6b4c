"""loglake-query: the stored logs of every tier, by trace, container, time, level or text; or any SQL.

The commands and their options are query.commands; this is the program: it runs a command on the
local lake, through ``loglake-query serve`` (``--server``), or it serves (``serve``, ``token``).
"""

from __future__ import annotations

import argparse
import os
import sys

from query import remote
from query.commands import COMMANDS, Session, _summary, parser, verify_export
from runtime import completion
from runtime.errors import LoglakeError, QueryError, exit_with


def _token(args: argparse.Namespace) -> int:
    from query.serve import app
    store = app.tokens_path(args.config)
    if args.action == "list":
        _summary(args, [f"{t['name']}\tcreated {t['created']}" for t in store.names()], {"tokens": store.names()})
        return 0
    if not args.name:
        raise QueryError(f"token {args.action} needs the NAME of the identity, e.g. loglake-query token "
                         f"{args.action} alice")
    if args.action == "revoke":
        store.revoke(args.name)
        print(f"revoked the token of {args.name}", file=sys.stderr)
        return 0
    token = store.create(args.name)
    print(token)
    print(f"the token of {args.name} (identity token:{args.name}): shown this once, stored as its SHA-256 in "
          f"{store.path}; send it as 'Authorization: Bearer …'", file=sys.stderr)
    return 0


def _stdout_to_devnull() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush of what is still
    buffered does not fail again ("Exception ignored … BrokenPipeError"), as the Python docs advise
    (library/signal.html, "Note on SIGPIPE"). Under a test's captured stdout there is no descriptor."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    top = parser()
    args = top.parse_args(argv)
    args.argv = argv
    if args.command == "completion":
        print(completion.script(top, args.shell), end="")
        return 0
    try:
        if args.command == "verify-export":
            return verify_export(args)
        if args.command == "serve":
            from query.serve import app   # aiohttp and the service only where they are used
            app.serve(args.config, ready=lambda where: print(f"loglake-query serve: listening on {where}",
                                                              file=sys.stderr, flush=True))
            return 0
        if args.command == "token":
            return _token(args)
        client = remote.Client.of(args) if args.command in remote.COMMANDS else None
        if client is not None:
            return remote.run(client, args)
        session = Session(args)
        try:
            return COMMANDS[args.command](session) or 0
        finally:
            session.close()
    except BrokenPipeError:
        # the reader left (`| head`, `| grep -q`): like grep, stop quietly; what it read was what it wanted
        _stdout_to_devnull()
        return 0
    except (LoglakeError, OSError) as e:
        if args.debug:
            raise
        return exit_with("loglake-query", e)
    except KeyboardInterrupt:
        return 130  # Ctrl-C: the shell's convention (128 + SIGINT), without a traceback


if __name__ == "__main__":
    sys.exit(main())
