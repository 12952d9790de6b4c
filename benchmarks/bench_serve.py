"""loglake-query serve under load, side by side with the library path, on the query benchmark's lake.

    .venv/bin/python benchmarks/bench_serve.py [--data var/bench-query-16k] [--size 100] [--requests 200]
                                               [--clients 1,50]

The lake is bench_query.py's (``<data>/<size>M-realistic``; run bench_query.py first to generate it).
A service is started on it (HTTPS, a development PKI, a bearer token, one role reading every namespace,
so the grant is a real condition of every query) and asked, by 1 and by 50 clients at once (threads, each
with its own keep-alive HTTPS connection), Loki's ``query_range`` for one container over 15 minutes (limit
1000, as Grafana's Explore asks) and a trace lookup (``{namespace=~".+"} | trace_id="…"``, which the trace
index plans). The same two queries run through the library path the CLI uses, in this process, one at a
time. Reports p50/p95 of each, the service/library ratio at one client, throughput, and the service's
peak RSS under the 50-client load (read from /proc); prints a table and writes
benchmarks/results/bench_serve.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from aggregator import certs  # noqa: E402
from benchmarks.logdata import CONTAINERS, DAY0, NS, PARTITIONS, trace_of  # noqa: E402
from lake.selector import Selector  # noqa: E402
from query import plan  # noqa: E402
from query.commands import LINE_COLUMNS, TRACE_COLUMNS  # noqa: E402
from query.connect import IN_TIME_ORDER, NEWEST_FIRST, Lake, Selection  # noqa: E402
from query.filters import Filters  # noqa: E402
from query.serve.identity import TokenStore  # noqa: E402

WHAT = {"command": "benchmarks/bench_serve.py"}


def _pki(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = certs.make_ca()
    (out / "ca.crt").write_bytes(certs._pem_cert(ca_cert))
    cert, key = certs.issue(ca_cert, ca_key, "localhost", server=True)
    (out / "serve.crt").write_bytes(certs._pem_cert(cert))
    (out / "serve.key").write_bytes(certs._pem_key(key))


def _config(lake_config: Path, work: Path) -> tuple[Path, str]:
    _pki(work / "pki")
    tokens = work / "tokens.json"
    token = TokenStore(tokens).create("bench")
    text = lake_config.read_text() + f"""
[serve]
listen = "127.0.0.1:0"
tls_cert_file = "{work / 'pki' / 'serve.crt'}"
tls_key_file = "{work / 'pki' / 'serve.key'}"
tokens_file = "{tokens}"
max_limit = 5000

[[serve.roles]]
name = "everything"
permissions = ["read"]
members = ["token:bench"]
[[serve.roles.grants]]
namespace = "*"
"""
    config = lake_config.parent / "bench-serve.toml"
    config.write_text(text)
    return config, token


class Client:
    """One keep-alive HTTPS connection, as a Grafana backend or a logcli keeps one."""

    def __init__(self, host: str, port: int, token: str, ca: Path) -> None:
        self.conn = http.client.HTTPSConnection(host, port, context=ssl.create_default_context(cafile=str(ca)),
                                                timeout=120)
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str, params: dict[str, str]) -> tuple[int, int]:
        self.conn.request("GET", path + "?" + urllib.parse.urlencode(params), headers=self.headers)
        r = self.conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"{r.status}: {body[:300]!r}")
        doc = orjson.loads(body)
        return r.status, sum(len(s["values"]) for s in doc["data"]["result"])


def _pct(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"p50_ms": round(statistics.median(s) * 1000, 1),
            "p95_ms": round(s[min(len(s) - 1, int(len(s) * 0.95))] * 1000, 1), "n": len(s)}


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "bench-query-16k")
    ap.add_argument("--size", type=int, default=100, help="millions of records (bench_query.py's lake)")
    ap.add_argument("--per-day", type=int, default=10)
    ap.add_argument("--requests", type=int, default=200, help="requests of each query per concurrency level")
    ap.add_argument("--clients", default="1,50")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_serve.json")
    a = ap.parse_args()
    lake_dir = a.data / f"{a.size}M-realistic"
    if not (lake_dir / "loglake.toml").exists():
        sys.exit(f"bench_serve: no lake at {lake_dir}; run benchmarks/bench_query.py --sizes {a.size} first")
    work = lake_dir / "bench-serve"
    config, token = _config(lake_dir / "loglake.toml", work)
    days = a.size // a.per_day
    per_pd = a.size * 1_000_000 // days // PARTITIONS
    rng = random.Random(7)

    def container() -> tuple[dict[str, str], Filters]:
        day, minute, c = rng.randrange(days), rng.randrange(24 * 60 - 15), rng.randrange(CONTAINERS)
        since = (DAY0 + day * 86400 + minute * 60) * NS
        ns, pod, name = f"ns-{c // 10:02d}", f"svc-{c // 10:02d}-{(c // 2) % 5}-7d9f8", "app" if c % 2 == 0 else "proxy"
        params = {"query": f'{{namespace="{ns}", pod="{pod}", container="{name}"}}', "start": str(since),
                  "end": str(since + 15 * 60 * NS), "limit": "1000", "direction": "backward"}
        return params, Filters(Selector(namespace=ns, pod=pod, container=name, since_ns=since,
                                        until_ns=since + 15 * 60 * NS))

    def trace() -> tuple[dict[str, str], str]:
        tid = str(trace_of(rng.randrange(days), rng.randrange(per_pd // 4) // 3 * 3))
        params = {"query": f'{{namespace=~".+"}} | trace_id="{tid}"', "start": str(DAY0 * NS),
                  "end": str((DAY0 + days * 86400) * NS), "limit": "1000", "direction": "forward"}
        return params, tid

    # the library path, as the CLI runs it, in this process
    lake = Lake(str(config))
    library: dict[str, list[float]] = {"container + 15 min": [], "trace lookup": []}
    for _ in range(a.requests):
        _, f = container()
        t0 = time.perf_counter()
        chosen = plan.select(lake.catalog, f, lake.keyring.get)
        where, params = f.where()
        lake.select(chosen.files, Selection(LINE_COLUMNS, where, tuple(params), NEWEST_FIRST, 1000),
                    rows=chosen.row_ranges(), what=WHAT)
        library["container + 15 min"].append(time.perf_counter() - t0)
        _, tid = trace()
        t0 = time.perf_counter()
        chosen = plan.trace(lake.catalog, tid)
        lake.select(chosen.files, Selection(TRACE_COLUMNS, "trace_id = ?", (tid,), IN_TIME_ORDER),
                    rows=chosen.row_ranges(), what=WHAT)
        library["trace lookup"].append(time.perf_counter() - t0)
    lake.close()

    proc = subprocess.Popen([sys.executable, "-m", "query.cli", "--config", str(config), "serve"],
                            stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    if "listening on" not in line:
        sys.exit(f"bench_serve: the service did not start: {line}{proc.stderr.read()}")
    port = int(line.rsplit(":", 1)[1])
    results: dict[str, dict] = {"library, 1 client": {k: _pct(v) for k, v in library.items()}}
    try:
        for n in [int(c) for c in a.clients.split(",")]:
            samples: dict[str, list[float]] = {"container + 15 min": [], "trace lookup": []}
            lock = threading.Lock()
            peak = [0]
            stop = threading.Event()

            def watch() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], _rss_kb(proc.pid))
                    time.sleep(0.1)

            def client(requests: int) -> None:
                c = Client("127.0.0.1", port, token, work / "pki" / "ca.crt")
                for _ in range(requests):
                    for name, make in (("container + 15 min", container), ("trace lookup", trace)):
                        with lock:
                            params = make()[0]
                        t0 = time.perf_counter()
                        _, got = c.get("/loki/api/v1/query_range", params)
                        if name == "trace lookup" and got == 0:
                            raise RuntimeError(f"trace found nothing: {params}")
                        with lock:
                            samples[name].append(time.perf_counter() - t0)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            started = time.perf_counter()
            with ThreadPoolExecutor(n) as pool:
                for fut in [pool.submit(client, max(1, a.requests // n)) for _ in range(n)]:
                    fut.result()
            elapsed = time.perf_counter() - started
            stop.set()
            watcher.join()
            results[f"service, {n} clients"] = {**{k: _pct(v) for k, v in samples.items()},
                                                "requests_per_s": round(sum(map(len, samples.values())) / elapsed, 1),
                                                "peak_rss_mb": round(peak[0] / 1024, 1)}
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    one = results.get("service, 1 clients", {})
    ratio = {k: round(one[k]["p50_ms"] / results["library, 1 client"][k]["p50_ms"], 2)
             for k in library if k in one}
    print(f"\n{a.size}M records ({lake_dir}); p50 / p95 ms")
    print(f"{'':28s} {'container + 15 min':>22s} {'trace lookup':>22s} {'req/s':>8s} {'peak RSS MB':>12s}")
    for name, r in results.items():
        cells = [f"{r[k]['p50_ms']:9.1f} / {r[k]['p95_ms']:9.1f}" for k in ("container + 15 min", "trace lookup")]
        print(f"{name:28s} {cells[0]:>22s} {cells[1]:>22s} {r.get('requests_per_s', ''):>8} "
              f"{r.get('peak_rss_mb', ''):>12}")
    print(f"service / library at 1 client (p50): {ratio}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"benchmark": "bench_serve", "size_m": a.size, "requests": a.requests,
                                 "results": results, "service_over_library_p50": ratio}, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
