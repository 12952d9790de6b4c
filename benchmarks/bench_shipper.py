"""Shipper throughput, CPU and memory, against the real TLS broker.

    make kafka-up
    .venv/bin/python benchmarks/bench_shipper.py [--lines 2000000] [--files 20] [--tail-files 1000]

1. Throughput: ``--lines`` CRI lines in ``--files`` files (about 70% JSON, 20% plain,
   10% P/F pieces of split lines, ~300 B/line) shipped by ``loglake-shipper --once``
   over mutual TLS to a fresh topic. Reports lines/s, CPU seconds per million lines
   (user+sys of the shipper process) and its peak RSS.
2. Memory: ``--tail-files`` small files tailed at once (``--once`` holds every file
   open until the end); reports peak RSS.

Prints a table and writes benchmarks/results/bench_shipper.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.loggen import generate  # noqa: E402

CERTS = Path(os.environ.get("LOGLAKE_CERTS", ROOT / "var" / "certs"))
BOOTSTRAP = os.environ.get("LOGLAKE_BENCH_BOOTSTRAP", "127.0.0.1:19093")


def config(tmp: Path, include: str, topic: str | None) -> Path:
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


def run_shipper(cfg: Path) -> dict:
    """Run the shipper as a child process; its own CPU time and peak RSS (wait4 reports that one child)."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "shipper.cli", "--config", str(cfg), "--once",
                             "--log-level", "WARNING"], cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"loglake-shipper exited with {proc.returncode}")
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


def throughput(lines: int, files: int, work: Path) -> dict:
    logs = work / "logs"
    t0 = time.monotonic()
    generate(logs, lines, files=files, seed=11, split_share=0.10, json_share=0.78)
    gen_s = time.monotonic() - t0
    mix = line_mix(logs / "pods")
    topic = "bench-" + uuid.uuid4().hex[:8]
    cfg = config(work, str(logs / "containers" / "*.log"), topic)
    subprocess.run([sys.executable, "-m", "aggregator.cli", "--config", str(cfg), "topics", "create"],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    r = run_shipper(cfg)
    n = mix["lines"]
    return {"generated_in_s": gen_s, **mix, **r, "lines_per_s": n / r["wall_s"],
            "cpu_s_per_million_lines": r["cpu_s"] / (n / 1e6), "topic": topic}


def many_files(count: int, work: Path) -> dict:
    logs = work / "many"
    generate(logs, count * 50, files=count, seed=5, split_share=0.0)
    cfg = config(work, str(logs / "containers" / "*.log"), None)
    return {"files": count, **run_shipper(cfg)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--tail-files", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_shipper.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="loglake-bench-"))
    try:
        t = throughput(args.lines, args.files, work / "t")
        m = many_files(args.tail_files, work / "m")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "throughput": t, "many_files": m,
              "targets": {"lines_per_s": 400_000, "cpu_s_per_million_lines": 2.5, "peak_rss_mb_1000_files": 150}}
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
