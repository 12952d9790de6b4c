"""Shipper throughput, CPU and memory, against the real TLS broker.

    make kafka-up
    .venv/bin/python benchmarks/bench_shipper.py [--lines 2000000] [--files 20] [--tail-files 1000]
    .venv/bin/python benchmarks/bench_shipper.py --compare REV [--rounds 3] [--lines ...]

1. Throughput: ``--lines`` CRI lines in ``--files`` files (about 70% JSON, 20% plain,
   10% P/F pieces of split lines, ~300 B/line) shipped by ``loglake-shipper --once``
   over mutual TLS to a fresh topic. Reports lines/s, CPU seconds per million lines
   (user+sys of the shipper process) and its peak RSS.
2. Memory: ``--tail-files`` small files tailed at once (``--once`` holds every file
   open until the end); reports peak RSS.

Prints a table and writes benchmarks/results/bench_shipper.json (``--out`` to change).

``--compare REV`` measures this work tree's shipper (uncommitted changes included) side
by side with git revision REV's, in one run on the same generated data. REV is checked
out with ``git worktree add --detach var/bench-baseline/<short sha> REV`` and given its
own venv there (``.venv``, built with ``pip install -e .``, which compiles the Rust
core with cargo; about 1.5 minutes on the 2-core machine, once: the worktree and the venv, marked by
``.venv/.installed``, are reused by later runs; ``rm -rf var/bench-baseline/<sha>``
and ``git worktree prune`` to start again). The data of both parts is generated
once; then each round runs the throughput part current, baseline, then the memory
part current, baseline (``--rounds``, default 3), every run to a fresh Kafka topic
and state directory, each shipper started by its own venv's python in its own tree.
Reports per side the median (min-max) of lines/s, CPU-s per million lines and peak
RSS, and current/baseline of the medians; the JSON holds both sides' raw runs, the
revisions and the command line.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.loggen import generate  # noqa: E402

CERTS = Path(os.environ.get("LOGLAKE_CERTS", ROOT / "var" / "certs"))
BOOTSTRAP = os.environ.get("LOGLAKE_BENCH_BOOTSTRAP", "127.0.0.1:19093")
BASELINES = ROOT / "var" / "bench-baseline"
TARGETS = {"lines_per_s": 400_000, "cpu_s_per_million_lines": 2.5, "peak_rss_mb_1000_files": 150}


def config(tmp: Path, include: str, topic: str | None) -> Path:
    # Only keys every revision since the benchmark was written knows: --compare runs old shippers on it.
    tmp.mkdir(parents=True, exist_ok=True)
    lines = ["[shipper]", 'node_name = "bench"', f'include = ["{include}"]', f'data_dir = "{tmp / "state"}"']
    if topic:
        lines += [f'tls_cert_file = "{CERTS / "shipper.crt"}"', f'tls_key_file = "{CERTS / "shipper.key"}"',
                  "[kafka]", f'bootstrap_servers = "{BOOTSTRAP}"', f'topic = "{topic}"', "partitions = 6",
                  f'ca_file = "{CERTS / "ca.crt"}"',
                  "[aggregator]", f'tls_cert_file = "{CERTS / "aggregator.crt"}"',
                  f'tls_key_file = "{CERTS / "aggregator.key"}"']
    else:
        lines += ["[spool]", f'dir = "{tmp / "spool"}"']
    path = tmp / "loglake.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Side:
    """One shipper under test: its tree and the python of its venv."""
    name: str
    tree: Path
    python: Path
    rev: str        # as given (baseline) or "HEAD"
    commit: str     # git rev-parse
    dirty: list[str]  # git status --porcelain of the tree
    build_s: float | None = None  # baseline venv built in this run; None when reused (or current)

    def describe(self) -> dict:
        return {"tree": str(self.tree), "python": str(self.python), "rev": self.rev, "commit": self.commit,
                "uncommitted_changes": self.dirty, "venv_build_s": self.build_s}


CURRENT = Side("current", ROOT, Path(sys.executable), "HEAD", "", [])


def child_env() -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # each side imports its own tree (cwd + its editable install)
    env.pop("VIRTUAL_ENV", None)
    return env


def run_shipper(cfg: Path, side: Side = CURRENT) -> dict:
    """Run the shipper as a child process; its own CPU time and peak RSS (wait4 reports that one child)."""
    t0 = time.monotonic()
    proc = subprocess.Popen([str(side.python), "-m", "shipper.cli", "--config", str(cfg), "--once",
                             "--log-level", "WARNING"], cwd=side.tree,
                            env=None if side is CURRENT else child_env())
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"loglake-shipper ({side.name}, {side.tree}) exited with {proc.returncode}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


def line_mix(root: Path) -> dict:
    n = json = plain = split = size = 0
    for f in root.rglob("*.log"):
        if f.is_symlink():
            continue
        with f.open("rb") as fh:
            for ln in fh:
                n += 1
                size += len(ln)
                text = ln.split(b" ", 3)[3]
                if ln.split(b" ", 3)[2] == b"P":
                    split += 1
                elif text.startswith(b"{"):
                    json += 1
                else:
                    plain += 1
    return {"lines": n, "avg_bytes": size / n, "json_share": json / n, "plain_share": plain / n,
            "partial_share": split / n}


def generate_throughput(lines: int, files: int, logs: Path) -> dict:
    t0 = time.monotonic()
    generate(logs, lines, files=files, seed=11, split_share=0.10, json_share=0.78)
    gen_s = time.monotonic() - t0
    return {"generated_in_s": gen_s, **line_mix(logs / "pods")}


def ship_throughput(logs: Path, mix: dict, work: Path, side: Side = CURRENT) -> dict:
    """One throughput run of ``side``'s shipper over ``logs`` to a fresh topic, state in ``work``."""
    topic = "bench-" + uuid.uuid4().hex[:8]
    cfg = config(work, str(logs / "containers" / "*.log"), topic)
    # the topic is made by this tree's aggregator, outside the measured run
    subprocess.run([sys.executable, "-m", "aggregator.cli", "--config", str(cfg), "topics", "create"],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    r = run_shipper(cfg, side)
    n = mix["lines"]
    return {**r, "lines_per_s": n / r["wall_s"], "cpu_s_per_million_lines": r["cpu_s"] / (n / 1e6),
            "topic": topic}


def throughput(lines: int, files: int, work: Path) -> dict:
    logs = work / "logs"
    mix = generate_throughput(lines, files, logs)
    return {**mix, **ship_throughput(logs, mix, work)}


def generate_many(count: int, logs: Path) -> None:
    generate(logs, count * 50, files=count, seed=5, split_share=0.0)


def ship_many(count: int, logs: Path, work: Path, side: Side = CURRENT) -> dict:
    cfg = config(work, str(logs / "containers" / "*.log"), None)
    return {"files": count, **run_shipper(cfg, side)}


def many_files(count: int, work: Path) -> dict:
    logs = work / "many"
    generate_many(count, logs)
    return ship_many(count, logs, work)


# --- --compare ---------------------------------------------------------------------------------

def git(*args: str, cwd: Path = ROOT) -> str:
    p = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout.rstrip("\n")  # not strip(): a porcelain line begins with a space


def native_stale(tree: Path) -> bool:
    """Whether the tree's built Rust core is missing or older than its sources."""
    built = list((tree / "shipper").glob("_lines*.so"))
    lines = tree / "shipper" / "lines"
    sources = [lines / "Cargo.toml", lines / "Cargo.lock", *(lines / "src").glob("*.rs")]
    newest = max((s.stat().st_mtime for s in sources if s.exists()), default=0.0)
    return not built or min(b.stat().st_mtime for b in built) < newest


def check_imports(side: Side) -> None:
    """The side's python must import the shipper (and its native core) from the side's own tree."""
    p = subprocess.run([str(side.python), "-c", "import shipper, shipper._lines as n; print(shipper.__file__);"
                        " print(n.__file__)"], cwd=side.tree, env=child_env(), capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{side.name}: {side.python} cannot import the shipper:\n{p.stderr.strip()}")
    for f in p.stdout.split():
        if not Path(f).resolve().is_relative_to(side.tree.resolve()):
            raise SystemExit(f"{side.name}: {side.python} imports {f}, outside {side.tree}")


def current_side() -> Side:
    dirty = git("status", "--porcelain", "--untracked-files=no").splitlines()
    side = Side("current", ROOT, Path(sys.executable), "HEAD", git("rev-parse", "HEAD"), dirty)
    if native_stale(ROOT):
        print("warning: this tree's native core (shipper/_lines*.so) is older than shipper/lines sources; "
              "rebuild it with `.venv/bin/pip install -e .` to measure them", file=sys.stderr)
    return side


def baseline_side(rev: str) -> Side:
    p = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=ROOT,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"--compare {rev}: not a commit in {ROOT}")
    commit = p.stdout.strip()
    tree = BASELINES / git("rev-parse", "--short", commit)
    if not (tree / ".git").exists():
        tree.parent.mkdir(parents=True, exist_ok=True)
        print(f"baseline: git worktree add --detach {tree.relative_to(ROOT)} {rev}", file=sys.stderr)
        p = subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=ROOT,
                           capture_output=True, text=True)
        if p.returncode != 0 and "already registered" in p.stderr:  # the directory was removed by hand
            p = subprocess.run(["git", "worktree", "add", "-f", "--detach", str(tree), commit], cwd=ROOT,
                               capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"git worktree add: {p.stderr.strip()}")
    head = git("rev-parse", "HEAD", cwd=tree)
    if head != commit:
        raise SystemExit(f"{tree} is at {head}, not {rev} ({commit}); remove it (git worktree remove) and rerun")
    dirty = git("status", "--porcelain", "--untracked-files=no", cwd=tree).splitlines()
    if dirty:
        print(f"warning: {tree} has changes of its own: {dirty}", file=sys.stderr)
    venv = tree / ".venv"
    marker = venv / ".installed"
    build_s = None
    if not marker.exists():
        # the current venv's base interpreter, so both sides run the same Python
        base = getattr(sys, "_base_executable", None) or shutil.which("python3") or "python3"
        env = child_env()
        env["PATH"] = f"{Path.home() / '.cargo' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        print(f"baseline: building {venv.relative_to(ROOT)} (pip install -e ., cargo build of the native core)",
              file=sys.stderr)
        t0 = time.monotonic()
        subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True, cwd=tree, env=env)
        p = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-e", "."], cwd=tree, env=env)
        if p.returncode != 0:
            raise SystemExit(f"baseline: pip install -e . in {tree} failed ({p.returncode})")
        build_s = time.monotonic() - t0
        marker.touch()
        print(f"baseline: built in {build_s:.0f} s", file=sys.stderr)
    elif native_stale(tree):
        raise SystemExit(f"{tree}: native core older than its sources; rm -rf {venv} and rerun")
    return Side("baseline", tree, venv / "bin" / "python", rev, commit, dirty, build_s)


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


METRICS = [  # key in a run, label, format, direction that is better (+1 higher, -1 lower)
    ("lines_per_s", "throughput, lines/s", "{:,.0f}", +1),
    ("cpu_s_per_million_lines", "shipper CPU-s per million lines", "{:.2f}", -1),
    ("peak_rss_mb", "peak RSS, throughput run, MB", "{:.0f}", -1),
    ("wall_s", "wall time, s", "{:.2f}", -1),
]


def compare(args: argparse.Namespace) -> None:
    sides = [current_side(), baseline_side(args.compare)]
    for s in sides:
        check_imports(s)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="loglake-bench-"))
    runs: dict[str, list[dict]] = {s.name: [] for s in sides}
    many: dict[str, list[dict]] = {s.name: [] for s in sides}
    try:
        mix = generate_throughput(args.lines, args.files, work / "logs")
        generate_many(args.tail_files, work / "many")
        for r in range(args.rounds):
            for s in sides:
                t = ship_throughput(work / "logs", mix, work / "runs" / f"{r}-{s.name}-t", s)
                runs[s.name].append({"round": r + 1, **t})
                print(f"round {r + 1}/{args.rounds} {s.name:<8}  {t['lines_per_s']:>10,.0f} lines/s  "
                      f"{t['cpu_s_per_million_lines']:.2f} CPU-s/M  {t['peak_rss_mb']:.0f} MB", file=sys.stderr)
            for s in sides:
                m = ship_many(args.tail_files, work / "many", work / "runs" / f"{r}-{s.name}-m", s)
                many[s.name].append({"round": r + 1, **m})
                print(f"round {r + 1}/{args.rounds} {s.name:<8}  tailing {m['files']} files: "
                      f"{m['peak_rss_mb']:.0f} MB", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = {}
    for s in sides:
        summary[s.name] = {k: spread([r[k] for r in runs[s.name]]) for k, *_ in METRICS}
        summary[s.name]["many_files_peak_rss_mb"] = spread([m["peak_rss_mb"] for m in many[s.name]])
    keys = [k for k, *_ in METRICS] + ["many_files_peak_rss_mb"]
    ratio = {k: summary["current"][k]["median"] / summary["baseline"][k]["median"] for k in keys}
    result = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_before": load_before, "load_avg_after": os.getloadavg()},
        "sides": {s.name: s.describe() for s in sides},
        "rounds": args.rounds, "order": "each round: throughput current, baseline; then many files current, baseline",
        "data": {**mix, "files": args.files, "many_files": args.tail_files},
        "summary": summary, "ratio_current_to_baseline": ratio,
        "runs": runs, "many_files_runs": many, "targets": TARGETS,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))

    cur, base = sides
    changed = [ln[3:] for ln in cur.dirty if not ln[3:].startswith("benchmarks/")]
    print(f"current  {cur.commit[:10]}{' + uncommitted changes to ' + ', '.join(changed) if changed else ''}"
          f" ({cur.tree})")
    print(f"baseline {base.commit[:10]} = {base.rev} ({base.tree})")
    print(f"{args.rounds} round(s) on the same data: {mix['lines']:,} lines in {args.files} files "
          f"(json / plain / partial {mix['json_share']:.0%} / {mix['plain_share']:.0%} / "
          f"{mix['partial_share']:.0%}, {mix['avg_bytes']:.0f} B/line); {args.tail_files} files tailed")
    print("median (min-max) per side; current/baseline of the medians; within 10% = not worse by more than 10%\n")
    rows = [("figure", "current", "baseline", "cur/base", "within 10%")]
    better = {k: d for k, _, _, d in METRICS} | {"many_files_peak_rss_mb": -1}
    labels = {k: (lbl, fmt) for k, lbl, fmt, _ in METRICS} | {
        "many_files_peak_rss_mb": (f"peak RSS tailing {args.tail_files} files, MB", "{:.0f}")}
    for k in keys:
        lbl, fmt = labels[k]
        cells = []
        for s in sides:
            v = summary[s.name][k]
            cells.append(fmt.format(v["median"]) + (f" ({fmt.format(v['min'])}-{fmt.format(v['max'])})"
                                                    if args.rounds > 1 else ""))
        q = ratio[k]
        ok = q >= 0.9 if better[k] > 0 else q <= 1.1
        rows.append((lbl, *cells, f"{q:.3f}", "yes" if ok else "NO"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print(f"\nJSON: {args.out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--tail-files", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_shipper.json")
    ap.add_argument("--compare", metavar="REV",
                    help="also run git revision REV's shipper, side by side on the same data")
    ap.add_argument("--rounds", type=int, default=None,
                    help="with --compare: alternating runs per side (default 3)")
    args = ap.parse_args()
    if args.compare is None:
        if args.rounds is not None:
            ap.error("--rounds needs --compare")
    else:
        args.rounds = 3 if args.rounds is None else args.rounds
        if args.rounds < 1:
            ap.error("--rounds must be at least 1")
        compare(args)
        return
    work = Path(tempfile.mkdtemp(prefix="loglake-bench-"))
    try:
        t = throughput(args.lines, args.files, work / "t")
        m = many_files(args.tail_files, work / "m")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "throughput": t, "many_files": m, "targets": TARGETS}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    rows = [
        ("lines shipped", f"{t['lines']:,}", ""),
        ("mix json / plain / partial", f"{t['json_share']:.0%} / {t['plain_share']:.0%} / {t['partial_share']:.0%}", ""),
        ("average line", f"{t['avg_bytes']:.0f} B", ""),
        ("wall time", f"{t['wall_s']:.1f} s", ""),
        ("throughput", f"{t['lines_per_s']:,.0f} lines/s", "target >= 400,000"),
        ("shipper CPU", f"{t['cpu_s_per_million_lines']:.2f} CPU-s per million lines", "target <= 2.5"),
        ("peak RSS (throughput run)", f"{t['peak_rss_mb']:.0f} MB", ""),
        (f"peak RSS tailing {m['files']} files", f"{m['peak_rss_mb']:.0f} MB", "target <= 150"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<40} {target}")
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
