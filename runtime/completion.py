"""Shell completion scripts for the three commands, generated from their argparse parsers by shtab.

``loglake-query completion bash`` and ``loglake-aggregator completion bash`` (kubectl's habit), and
``loglake-shipper --print-completion bash`` (shtab's, for a command without subcommands), print a
script to source: ``source <(loglake-query completion bash)``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

SHELLS = ("bash", "zsh", "tcsh")


def files(action: argparse.Action) -> argparse.Action:
    """Complete this option's value with file names (shtab's marker is set when a script is made,
    so an ordinary run does not import shtab)."""
    action.complete_files = True  # type: ignore[attr-defined]
    return action


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("completion", help="print a shell completion script",
                       epilog="examples:\n  source <(%(prog)s bash)            # this shell\n"
                              "  %(prog)s zsh > \"${fpath[1]}/_loglake\"  # every zsh",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shell", choices=SHELLS)


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    import shtab
    for action in _actions(parser):
        if getattr(action, "complete_files", False):
            action.complete = shtab.FILE  # type: ignore[attr-defined]
    return shtab.complete(parser, shell=shell)


def _actions(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                yield from _actions(sub)


class PrintCompletion(argparse.Action):
    """``--print-completion SHELL``: print the script and exit, as --version does."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, choices=SHELLS, metavar="SHELL",
                         help="print a shell completion script and exit", default=argparse.SUPPRESS)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(script(parser, str(values)), end="")
        parser.exit()
