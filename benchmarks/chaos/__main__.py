"""The command line: ``.venv/bin/python -m benchmarks.chaos [SCENARIO ...] [options]`` (see the
package docstring, which is also its --help)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from . import __doc__ as SUITE_DOC
from .components import cleanup_all
from .options import BIN, ROOT, Options
from .report import describe, jsonable, save, table
from .scenarios import DEFAULT_SCENARIOS, SCENARIOS, prepare_scratch, run_scenario


def _pair(text: str) -> tuple[float, float]:
    a, _, b = text.partition(",")
    lo, hi = float(a), float(b or a)
    if hi < lo:
        raise argparse.ArgumentTypeError(f"{text}: MIN,MAX with MIN <= MAX")
    return lo, hi


def _setting(text: str) -> tuple[str, str, object]:
    key, _, value = text.partition("=")
    section, _, name = key.partition(".")
    if not (section and name and _):
        raise argparse.ArgumentTypeError(f"{text}: SECTION.KEY=VALUE")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return section, name, parsed


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    try:
        import query  # noqa: F401
    except ImportError:
        venv_python = BIN / "python"
        if venv_python.exists() and Path(sys.executable).resolve() != venv_python.resolve():
            os.execv(str(venv_python), [str(venv_python), "-m", __package__, *given])
        raise
    ap = argparse.ArgumentParser(prog=f"python -m {__package__}", description=SUITE_DOC,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                    help=f"any of {', '.join(SCENARIOS)} (default: {' '.join(DEFAULT_SCENARIOS)})")
    ap.add_argument("--short", action="store_true", help="quick form; exit 1 if any scenario fails")
    ap.add_argument("--cycles", type=int, help="kill cycles per scenario (30; 4 with --short)")
    ap.add_argument("--rate", type=float, help="logical lines per second over all files (2000)")
    ap.add_argument("--files", type=int, help="files, one writer each (8)")
    ap.add_argument("--rotate", type=_pair, metavar="MIN,MAX", help="seconds between a file's rotations (15,40; 3,8)")
    ap.add_argument("--no-rotate", action="store_true", help="no rotations")
    ap.add_argument("--wait", type=_pair, metavar="MIN,MAX", help="seconds before each kill (1,6; 1,3)")
    ap.add_argument("--down", type=_pair, metavar="MIN,MAX", help="seconds down after each kill (0.5,3; 0.5,2)")
    ap.add_argument("--outage-s", type=float, help="broker scenario: one outage this long (120; 20)")
    ap.add_argument("--quiet-s", type=float, help="scenario none: seconds of writing with nothing killed (30; 10)")
    ap.add_argument("--transport", choices=["spool", "kafka"], help="override the scenarios' transport")
    ap.add_argument("--certs", type=Path, default=ROOT / "var" / "certs")
    ap.add_argument("--bin", type=Path, default=BIN,
                    help="directory holding loglake-shipper and loglake-aggregator (default .venv/bin); e.g. "
                         "wrappers running another revision. The count imports `query` from this process")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--set", dest="settings", action="append", type=_setting, default=[], metavar="SECTION.KEY=VALUE",
                    help="override a key of the generated loglake.toml (JSON value), e.g. shipper.rotate_wait_ms=300")
    ap.add_argument("--time-limit-s", type=float, help="per scenario (default: from cycles, waits and outage)")
    ap.add_argument("--scratch", type=Path, default=ROOT / "var" / "chaos", help="data dir, removed at start")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "chaos.json")
    args = ap.parse_args(argv)
    names = args.scenarios or list(DEFAULT_SCENARIOS)
    for n in names:
        if n not in SCENARIOS:
            ap.error(f"unknown scenario {n!r}; choose from {', '.join(SCENARIOS)}")
    opts = Options.short() if args.short else Options()
    overrides: dict[str, dict[str, object]] = {}
    for section, key, value in args.settings:
        overrides.setdefault(section, {})[key] = value
    kw = {k: v for k, v in (("cycles", args.cycles), ("rate", args.rate), ("files", args.files),
                            ("rotate", args.rotate), ("wait", args.wait), ("down", args.down),
                            ("outage_s", args.outage_s), ("quiet_s", args.quiet_s), ("transport", args.transport),
                            ("seed", args.seed),
                            ("time_limit_s", args.time_limit_s)) if v is not None}
    opts = replace(opts, certs=args.certs.resolve(), bin=args.bin.absolute(), overrides=overrides, **kw)
    if args.no_rotate:
        opts = replace(opts, rotate=None)

    def on_term(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)   # even when started with SIGINT ignored
    signal.signal(signal.SIGHUP, on_term)

    prepare_scratch(args.scratch)
    command = [sys.executable, "-m", __package__, *given]
    doc = {"command": shlex.join(command), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "options": jsonable(asdict(opts)), "scenarios": []}
    t0 = time.monotonic()
    interrupted = False
    try:
        for name in names:
            print(f"== {name}", flush=True)
            r = run_scenario(name, opts, args.scratch.resolve(), log=lambda m: print(m, flush=True))
            doc["scenarios"].append(r)
            print(("ok" if r["ok"] else "FAILED:\n" + describe(r)), flush=True)
            save(args.json, doc, t0)
    except KeyboardInterrupt:
        interrupted = True
        print("chaos: interrupted; every process it started is stopped", file=sys.stderr)
    finally:
        cleanup_all()
        save(args.json, doc, t0)
    print()
    print(table(doc["scenarios"]))
    print(f"\n{len(doc['scenarios'])} scenarios in {time.monotonic() - t0:.0f} s; details in {args.json}")
    if interrupted:
        return 130
    failed = [r["scenario"] for r in doc["scenarios"] if not r["ok"]]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if args.short and failed else 0


if __name__ == "__main__":
    sys.exit(main())
