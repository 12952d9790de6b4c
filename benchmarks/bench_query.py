"""Query latency on realistic logs at 10M, 100M and more records: planned from the catalog and indexes vs a
full scan.

    .venv/bin/python benchmarks/bench_query.py [--sizes 10,100] [--runs 20] [--scan-runs 3] [--synthetic]

Data (benchmarks/logdata.py): ``--per-day`` million records a day (default 10) over ``size / per-day`` days
— the archive grows by retention, as it does in production. 200 containers in 20 namespaces, skewed, 4
partitions; a request writes 4 lines per partition at one instant, one in three requests carries a trace
id shared by all 16 of its lines; JSON, logfmt and plain bodies with request ids, IPs, user agents, URLs,
digests and stack traces; 2% errors; a rare needle in the bodies. ``--synthetic`` gives the first
benchmark's eight short templates instead, only to compare with its figures. The records are written by
the aggregator's own ``ParquetWriter`` (sorted, encrypted, described, trace-indexed) and catalogued: the
last two days as warm files (one per partition and hour), older days as cold files (zstd 9; one per partition
and day, or per run of whole hours when the day holds more than ``cold_file_max_rows``, as compaction cuts
them). Data is kept under ``var/bench-query/<size>M-<realistic|synthetic>`` and reused by later
runs; how long generating took is printed when it happens.

Each query runs through the library path the CLI uses (catalog plan, view, DuckDB) with the lake open,
``--runs`` times with random arguments; the same SQL over a view of every file (no catalog pruning, no
index) runs ``--scan-runs`` times. The needle is looked for over one day and over the last 30 days (or
every day the archive holds, if fewer), and the 30 days once more as one DuckDB query rather than in
Lake.select's shares, to show what they gain. Reports p50/p95 and the ratio; prints a table and writes
benchmarks/results/bench_query.json. CLI process start-up (Python imports) is not included; it is printed
once for reference.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from aggregator import config as agg_config  # noqa: E402
from aggregator.compaction import spans
from aggregator.writer import ParquetWriter
from lake import keys
from lake.catalog.base import open_catalog
from lake.keys import KeyRing, key_scope
from lake.selector import Selector, parse_levels
from lake.catalog.model import FileEntry, Tier
from lake.config import TiersConfig
from schemas.record import DAY_NS, HOUR_NS
from lake.storage import Storage
from query import plan  # noqa: E402
from query.commands import LINE_COLUMNS, TRACE_COLUMNS  # noqa: E402
from query.connect import IN_TIME_ORDER, NEWEST_FIRST, Lake, Selection  # noqa: E402
connect = sys.modules["query.connect"]   # the module (the package's ``connect`` is a function)
from query.filters import Filters  # noqa: E402
from benchmarks.logdata import CONTAINERS, DAY0, NEEDLE, NS, PARTITIONS, rows_sql, trace_of  # noqa: E402

WARM_DAYS = 2


def day_files(day: int, days: int, per_pd: int, tiers: TiersConfig) -> tuple[str, list[tuple[int, int, str]]]:
    """A day's tier and files, as (first row, end row, stamp after the date) of each partition's day: warm
    per hour, cold as compaction cuts it (whole, or runs of whole hours up to cold_file_max_rows). Row j
    of a partition-day is at j * step (benchmarks.logdata), so hour h starts at row ceil(h * HOUR / step)."""
    step = DAY_NS // per_pd
    starts = [min(per_pd, -(-h * HOUR_NS // step)) for h in range(24)] + [per_pd]
    hours = [(starts[h], starts[h + 1]) for h in range(24)]
    if day >= days - WARM_DAYS:
        return "warm", [(first, last, f"{h:02d}") for h, (first, last) in enumerate(hours) if last > first]
    runs = spans([(h * HOUR_NS, last - first) for h, (first, last) in enumerate(hours) if last > first], DAY_NS,
                 tiers.cold_file_max_rows)
    return "cold", [(hours[a // HOUR_NS][0], hours[b // HOUR_NS - 1][1],
                     "" if b - a == DAY_NS else f"{a // HOUR_NS:02d}") for a, b in runs]


@dataclass(frozen=True)
class Planned:
    """One file of a generated archive: rows [first, last) of a partition's day, at a fixed path."""
    day: int
    tier: str
    partition: int
    first: int
    last: int
    offset: int
    path: str


def planned_files(days: int, per_day: int, tiers: TiersConfig) -> list[Planned]:
    per_pd = per_day // PARTITIONS
    out, offset = [], 0
    for day in range(days):
        tier, periods = day_files(day, days, per_pd, tiers)
        for p in range(PARTITIONS):
            for first, last, hour in periods:
                stamp = time.strftime("%Y%m%d", time.gmtime(DAY0 + day * 86400)) + hour
                out.append(Planned(day, tier, p, first, last, offset, f"{tier}/bench/{p}/{stamp}-{offset:020d}-"
                                                                       f"{offset + last - first - 1:020d}-gen.parquet"))
                offset += last - first
    return out


def generate(config: Path, days: int, per_day: int, realistic: bool) -> None:
    """Writes every planned file the catalog does not list yet: a file is listed once written whole, so a
    generation stopped midway goes on where it stopped (the file it was writing is written again)."""
    settings = agg_config.load(str(config))
    catalog = open_catalog(settings.aggregator)
    ring = KeyRing(catalog, keys.master_for(settings.aggregator, create=True))
    storage = Storage(settings.aggregator, settings.tiers)
    writer = ParquetWriter(storage)
    have = {f.path for f in catalog.files()}
    started = time.monotonic()
    planned = planned_files(days, per_day, settings.tiers)
    for day in range(days):
        for f in (f for f in planned if f.day == day and f.path not in have):
            tier = Tier(f.tier)
            key = ring.for_scope(key_scope(tier, (DAY0 + day * 86400) * NS))
            w = writer.write(rows_sql(day, f.partition, per_day // PARTITIONS, f.first, f.last, realistic=realistic),
                             storage.target(tier, f.path), key, storage.layout(tier))
            new = w.new_file(path=f.path, tier=tier, topic="bench", partition=str(f.partition), first_offset=f.offset,
                             last_offset=f.offset + f.last - f.first - 1, key_id=key.key_id, created_at=time.time_ns())
            catalog.replace([], [new], 0)
        print(f"  day {day + 1}/{days} written ({time.monotonic() - started:.0f} s)", flush=True)
    catalog.close()


def stored_layout_differs(files: list[FileEntry], days: int, per_day: int, tiers: TiersConfig) -> bool:
    """Whether stored data was written with another layout (row groups, cold files) than today's settings
    give: its figures would describe that layout, so it is generated again."""
    want = {"warm": tiers.warm_row_group_size, "cold": tiers.cold_row_group_size}
    planned = {f.path for f in planned_files(days, per_day, tiers)}
    return any(f.path not in planned or f.row_group_rows != want[f.tier] for f in files)


def ensure_data(base: Path, size_m: int, per_day_m: int, realistic: bool) -> tuple[Path, dict]:
    days = size_m // per_day_m
    where = base / f"{size_m}M-{'realistic' if realistic else 'synthetic'}"
    config = where / "loglake.toml"
    if not config.exists():
        where.mkdir(parents=True, exist_ok=True)
        (where / "lake").mkdir(exist_ok=True)
        config.write_text(f'[aggregator]\ndata_dir = "{where / "lake"}"\n')
    settings = agg_config.load(str(config))
    catalog = open_catalog(settings.aggregator)
    files = catalog.files()
    catalog.close()
    if stored_layout_differs(files, days, per_day_m * 1_000_000, settings.tiers):
        for f in (where / "lake").glob("*"):
            subprocess.run(["rm", "-rf", str(f)], check=True)
        files = []
    if sum(f.rows for f in files) != size_m * 1_000_000:
        print(f"generating {size_m}M records over {days} days into {where}"
              f"{f' (going on: {len(files)} files there)' if files else ''} …", flush=True)
        t0 = time.monotonic()
        generate(config, days, per_day_m * 1_000_000, realistic)
        print(f"  done in {time.monotonic() - t0:.0f} s", flush=True)
    catalog = open_catalog(agg_config.load(str(config)).aggregator)
    files = catalog.files()
    facts = {"records": sum(f.rows for f in files), "files": len(files), "days": days,
             "parquet_bytes": sum(f.bytes for f in files),
             "tiers": {t: sum(1 for f in files if f.tier == t) for t in ("warm", "cold")},
             "catalog_bytes": settings.aggregator.catalog_path.stat().st_size,
             "layout": {"warm_row_group_size": settings.tiers.warm_row_group_size,
                        "cold_row_group_size": settings.tiers.cold_row_group_size,
                        "cold_file_max_rows": settings.tiers.cold_file_max_rows}}
    catalog.close()
    return config, facts


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def summary(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"p50_ms": round(statistics.median(s), 1), "p95_ms": round(s[min(len(s) - 1, int(len(s) * 0.95))], 1),
            "runs": len(s)}


BENCH = {"command": "benchmarks/bench_query.py"}


def measure(config: Path, facts: dict, runs: int, scan_runs: int, seed: int) -> dict:
    rng = random.Random(seed)
    days = facts["days"]
    lake = Lake(str(config))
    everything = plan.everything(lake.catalog)
    per_pd = facts["records"] // days // PARTITIONS

    def trace_args() -> tuple[str]:
        day = rng.randrange(days)
        return (str(trace_of(day, rng.randrange(per_pd // 4) // 3 * 3)),)

    def container_args() -> Filters:
        day, minute = rng.randrange(days), rng.randrange(24 * 60 - 15)
        c = rng.randrange(CONTAINERS)
        since = (DAY0 + day * 86400 + minute * 60) * NS
        return Filters(Selector(namespace=f"ns-{c // 10:02d}", pod=f"svc-{c // 10:02d}-{(c // 2) % 5}-7d9f8",
                                container="app" if c % 2 == 0 else "proxy", since_ns=since,
                                until_ns=since + 15 * 60 * NS))

    def day_filters(**kw: object) -> Filters:
        day = rng.randrange(days)
        return Filters(Selector(since_ns=(DAY0 + day * 86400) * NS, until_ns=(DAY0 + (day + 1) * 86400) * NS),
                       **kw)  # type: ignore[arg-type]

    def run_trace(trace_id: str, scan: bool) -> int:
        chosen = everything if scan else plan.trace(lake.catalog, trace_id)
        if not scan:
            last_plan[0] = chosen.describe()
        # through Lake.select, as the CLI runs it: the audit entries before and after are part of the cost
        return lake.select(chosen.files, Selection(TRACE_COLUMNS, "trace_id = ?", (trace_id,), IN_TIME_ORDER),
                           rows=None if scan else chosen.row_ranges(), what=BENCH).num_rows

    last_plan = [""]   # what the planner chose in the last planned run

    def run_filtered(f: Filters, scan: bool, count: bool = False) -> int:
        chosen = everything if scan else plan.select(lake.catalog, f, lake.keyring.get)
        if not scan:
            last_plan[0] = chosen.describe()
        where, params = f.where()
        # as the CLI runs it: only the row groups the plan names (the needle index's)
        rows = None if scan else chosen.row_ranges()
        if count:
            return lake.query(chosen.files, f"SELECT count(*) FROM logs WHERE {where}", params, rows=rows,
                              what=BENCH).num_rows
        return lake.select(chosen.files, Selection(LINE_COLUMNS, where, tuple(params), NEWEST_FIRST, 1000),
                           rows=rows, what=BENCH).num_rows

    queries = {
        "trace lookup": lambda scan, a: run_trace(a[0], scan),
        "container + 15 min": lambda scan, f: run_filtered(f, scan),
        "level=ERROR count, 1 day": lambda scan, f: run_filtered(f, scan, count=True),
        "grep needle, 1 day": lambda scan, f: run_filtered(f, scan),
    }
    month = min(30, days)

    def month_filters() -> Filters:
        return Filters(Selector(since_ns=(DAY0 + (days - month) * 86400) * NS, until_ns=(DAY0 + days * 86400) * NS),
                       grep=NEEDLE)

    queries["grep needle, 30 days"] = queries["grep needle, 1 day"]   # or every day held, if fewer

    def one_query(scan: bool, f: Filters) -> int:
        """The same selection as one DuckDB query, without Lake.select's shares: what they gain, side by side."""
        shared, connect.SHARED_SCANS = connect.SHARED_SCANS, sys.maxsize
        try:
            return run_filtered(f, scan)
        finally:
            connect.SHARED_SCANS = shared

    queries["grep needle, 30 days, one query"] = one_query
    args = {"trace lookup": trace_args, "container + 15 min": container_args,
            "level=ERROR count, 1 day": lambda: day_filters(levels=parse_levels("error")),
            "grep needle, 1 day": lambda: day_filters(grep=NEEDLE), "grep needle, 30 days": month_filters,
            "grep needle, 30 days, one query": month_filters}
    out = {}
    for name, q in queries.items():
        q(False, args[name]())  # warm the page cache and the connection once
        planned, answers = [], []
        for _ in range(runs):
            a = args[name]()
            answers.append(0)
            planned.append(timed(lambda a=a: answers.__setitem__(-1, q(False, a))))
        scanned = [timed(lambda a=args[name](): q(True, a)) for _ in range(scan_runs)]
        out[name] = {"planned": summary(planned), "full_scan": summary(scanned),
                     "median_rows": statistics.median(answers), "last_plan": last_plan[0]}
        out[name]["speedup"] = round(out[name]["full_scan"]["p50_ms"] / max(out[name]["planned"]["p50_ms"], 0.01), 1)
        print(f"  {name:31} planned p50 {out[name]['planned']['p50_ms']:8.1f} ms  p95 "
              f"{out[name]['planned']['p95_ms']:8.1f} ms | full scan p50 {out[name]['full_scan']['p50_ms']:9.1f} ms"
              f" | {out[name]['speedup']}x | rows {out[name]['median_rows']} | {last_plan[0]}", flush=True)
    lake.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,100", help="millions of records, comma-separated")
    ap.add_argument("--per-day", type=int, default=10, help="millions of records per day")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--scan-runs", type=int, default=3)
    ap.add_argument("--synthetic", action="store_true",
                    help="the first benchmark's eight short templates (8 B/record), to compare with old figures")
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "bench-query",
                    help="where generated archives are kept (a relative path is taken from the working directory)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_query.json")
    args = ap.parse_args()
    args.data = args.data.resolve()   # the archives' configs name their data_dir, read from where they are
    result: dict[str, object] = {"machine": {"cpus": os.cpu_count()}, "sizes": {},
                                 "data": "synthetic" if args.synthetic else "realistic (benchmarks/logdata.py)"}
    for size in (int(s) for s in args.sizes.split(",")):
        config, facts = ensure_data(args.data, size, args.per_day, not args.synthetic)
        print(f"{size}M records: {facts['files']} files ({facts['tiers']}), {facts['parquet_bytes'] / 1e9:.2f} GB "
              f"Parquet, catalog {facts['catalog_bytes'] / 1e6:.0f} MB", flush=True)
        result["sizes"][f"{size}M"] = {**facts, "queries": measure(config, facts, args.runs, args.scan_runs, size)}
    sizes = list(result["sizes"].values())  # type: ignore[union-attr]
    if len(sizes) >= 2:
        small, big = sizes[0]["queries"], sizes[-1]["queries"]
        result["growth"] = {q: round(big[q]["planned"]["p50_ms"] / max(small[q]["planned"]["p50_ms"], 0.01), 2)
                            for q in small}
        print("\np50 growth from the smallest to the largest archive:")
        for q, g in result["growth"].items():  # type: ignore[union-attr]
            print(f"  {q:31} {g}x")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "query.cli", "--help"], cwd=ROOT, capture_output=True, check=True)
    result["cli_startup_ms"] = round((time.perf_counter() - t0) * 1000)
    print(f"\nfor reference, loglake-query process start-up (imports): {result['cli_startup_ms']} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
