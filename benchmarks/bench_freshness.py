"""End-to-end freshness: from a line written to a container log to that line answering a query.

    make kafka-up
    .venv/bin/python benchmarks/bench_freshness.py [--seconds 30] [--rate 2000] [--transport kafka|spool]

A writer appends background lines at ``--rate`` lines/s over 4 container logs and,
every 100 ms, a numbered probe line. ``loglake-shipper`` and ``loglake-aggregator``
run as in production (not --once). A poller asks ``query.connect`` every 100 ms for
the highest probe stored; a probe's latency is the time from its write to the first
poll that sees it (so it includes up to one poll interval and the query itself).
Prints p50/p95/p99/max and writes benchmarks/results/bench_freshness.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CERTS = Path(os.environ.get("LOGLAKE_CERTS", ROOT / "var" / "certs"))
BOOTSTRAP = os.environ.get("LOGLAKE_BENCH_BOOTSTRAP", "127.0.0.1:19093")


def write_config(tmp: Path, transport: str) -> Path:
    lines = ["[shipper]", 'node_name = "fresh"', f'include = ["{tmp}/logs/**/*.log"]', f'data_dir = "{tmp}/shipper"',
             f'tls_cert_file = "{CERTS / "shipper.crt"}"', f'tls_key_file = "{CERTS / "shipper.key"}"',
             "[aggregator]", f'data_dir = "{tmp}/lake"', f'group_id = "fresh-{uuid.uuid4().hex[:6]}"',
             f'tls_cert_file = "{CERTS / "aggregator.crt"}"', f'tls_key_file = "{CERTS / "aggregator.key"}"',
             "[spool]", f'dir = "{tmp}/spool"']
    if transport == "kafka":
        lines += ["[kafka]", f'bootstrap_servers = "{BOOTSTRAP}"', f'topic = "fresh-{uuid.uuid4().hex[:8]}"',
                  "partitions = 3", f'ca_file = "{CERTS / "ca.crt"}"']
    path = tmp / "loglake.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def cri(text: str) -> str:
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z stdout F {text}\n"


def writer(tmp: Path, rate: int, seconds: float, probes: dict[int, float], stop: threading.Event) -> None:
    files = []
    for j in range(4):
        p = tmp / "logs" / "pods" / f"shop_web-{j}_0f1e2d3c-0000-4000-8000-00000000000{j}" / "app" / "0.log"
        p.parent.mkdir(parents=True, exist_ok=True)
        files.append(p.open("a", buffering=1))
    seq, start = 0, time.monotonic()
    tick = 0.1
    while not stop.is_set() and time.monotonic() - start < seconds:
        t0 = time.monotonic()
        for i in range(int(rate * tick)):
            files[i % 4].write(cri(f'{{"level":"info","msg":"background {i}","user":{i % 97}}}'))
        files[0].write(cri(f"probe {seq}"))
        probes[seq] = time.time()
        seq += 1
        time.sleep(max(0.0, tick - (time.monotonic() - t0)))
    for f in files:
        f.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--transport", choices=["kafka", "spool"], default="kafka")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_freshness.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="loglake-fresh-"))
    config = write_config(tmp, args.transport)
    run = [sys.executable, "-m"]
    if args.transport == "kafka":
        subprocess.run(run + ["aggregator.cli", "--config", str(config), "topics", "create"], check=True,
                       cwd=ROOT, stdout=subprocess.DEVNULL)
    (tmp / "logs").mkdir()
    procs = [subprocess.Popen(run + [mod, "--config", str(config), "--log-level", "WARNING"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=(tmp / f"{mod}.log").open("w"))
             for mod in ("aggregator.cli", "shipper.cli")]
    import query
    probes: dict[int, float] = {}
    seen: dict[int, float] = {}
    stop = threading.Event()
    w = threading.Thread(target=writer, args=(tmp, args.rate, args.seconds, probes, stop))
    time.sleep(2)  # both processes up
    w.start()
    try:
        deadline = time.monotonic() + args.seconds + 15
        while time.monotonic() < deadline and (w.is_alive() or len(seen) < len(probes)):
            try:
                top = query.connect(str(config)).execute(
                    "SELECT max(CAST(split_part(body, ' ', 2) AS INTEGER)) FROM logs WHERE body LIKE 'probe %'"
                ).fetchone()[0]
            except Exception:
                top = None
            now = time.time()
            if top is not None:
                for s in range(top + 1):
                    seen.setdefault(s, now)
            time.sleep(0.1)
    finally:
        stop.set()
        w.join()
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
    lat = sorted(seen[s] - probes[s] for s in seen if s in probes)
    missing = len(probes) - len(lat)
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [float("nan")] * 99
    result = {"transport": args.transport, "rate_lines_per_s": args.rate, "seconds": args.seconds,
              "probes": len(probes), "not_seen": missing, "p50_s": q[49], "p95_s": q[94], "p99_s": q[98],
              "max_s": lat[-1] if lat else None, "target_p99_s": 2.0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"transport {args.transport}, {args.rate} lines/s for {args.seconds:g} s, {len(probes)} probes "
          f"({missing} not seen)")
    print(f"freshness p50 {q[49]:.2f} s   p95 {q[94]:.2f} s   p99 {q[98]:.2f} s   max {result['max_s']:.2f} s"
          f"   (target p99 <= 2 s)")
    print(f"JSON: {args.out}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
