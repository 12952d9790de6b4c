"""Synthetic but realistic container logs, laid out the way kubelet writes them.

    <out>/pods/<namespace>_<pod>_<uid>/<container>/0.log      CRI lines
    <out>/containers/<pod>_<namespace>_<container>-<id>.log    symlinks to the above

Services log JSON (level, msg, trace_id, span_id, fields) or plain text
("INFO ... trace_id=…"); requests fan out across services sharing one trace id;
a share of lines is split by the runtime into P…F partial lines. Deterministic
for a given seed. Used by ``make demo``, the tests and the benchmarks.

    python benchmarks/loggen.py --out DIR --lines 5000 [--files 8] [--seed 1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

# (namespace, service, container, style)
SERVICES = [
    ("shop", "frontend", "nginx", "plain"),
    ("shop", "checkout", "app", "json"),
    ("shop", "inventory", "app", "json"),
    ("payments", "payments", "api", "json"),
    ("payments", "ledger", "worker", "plain"),
    ("platform", "auth", "server", "json"),
    ("platform", "gateway", "envoy", "plain"),
    ("platform", "scheduler", "cron", "json"),
]
LEVELS = ["debug"] * 10 + ["info"] * 70 + ["warn"] * 12 + ["error"] * 8
MESSAGES = ["request handled", "cache miss", "order placed", "payment authorised", "stock reserved",
            "token issued", "retrying upstream call", "slow query", "connection reset by peer",
            "user session refreshed", "invoice generated", "rate limit applied"]
CLIENTS = ["Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0", "curl/8.5.0", "okhttp/4.12.0",
           "Go-http-client/2.0", "python-requests/2.32.3"]
PATHS = ["/api/cart", "/api/orders", "/api/pay", "/login", "/api/items/42", "/healthz", "/api/search?q=shoes"]


@dataclass
class Container:
    namespace: str
    pod: str
    container: str
    style: str
    uid: str
    cid: str
    path: Path


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def layout(out: Path, files: int, rng: random.Random, json_share: float | None = None) -> list[Container]:
    """``json_share``: the share of containers logging JSON (default: as SERVICES say)."""
    containers = []
    for i in range(files):
        ns, svc, cname, style = SERVICES[i % len(SERVICES)]
        if json_share is not None:
            style = "json" if i < round(files * json_share) else "plain"
        pod = f"{svc}-{_hex(rng, 8)}-{_hex(rng, 5)}" if i >= len(SERVICES) else f"{svc}-7d9f8b6c5-{_hex(rng, 5)}"
        uid = f"{_hex(rng, 8)}-{_hex(rng, 4)}-{_hex(rng, 4)}-{_hex(rng, 4)}-{_hex(rng, 12)}"
        cid = hashlib.sha256(f"{pod}/{cname}".encode()).hexdigest()
        target = out / "pods" / f"{ns}_{pod}_{uid}" / cname / "0.log"
        target.parent.mkdir(parents=True, exist_ok=True)
        link = out / "containers" / f"{pod}_{ns}_{cname}-{cid}.log"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            os.symlink(target.resolve(), link)
        containers.append(Container(ns, pod, cname, style, uid, cid, target))
    return containers


def _ts(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


def message(rng: random.Random, c: Container, t_ns: int, trace: str | None) -> str:
    level = rng.choice(LEVELS)
    msg = rng.choice(MESSAGES)
    span = _hex(rng, 16)
    if c.style == "json":
        rec = {"time": _ts(t_ns), "level": level, "msg": msg, "service": c.pod.split("-")[0],
               "path": rng.choice(PATHS), "status": 500 if level == "error" else 200,
               "latency_ms": round(rng.expovariate(1 / 40), 2), "user_id": rng.randrange(1, 5000),
               "client": rng.choice(CLIENTS), "request_id": _hex(rng, 32)}
        if trace:
            rec["trace_id"], rec["span_id"] = trace, span
        return json.dumps(rec, separators=(",", ":"))
    line = (f"{level.upper()} {msg} method=GET path={rng.choice(PATHS)} status={500 if level == 'error' else 200}"
            f" client=\"{rng.choice(CLIENTS)}\"")
    if trace:
        line += f" trace_id={trace} span_id={span}"
    return line


def cri_lines(t_ns: int, stream: str, text: str, split: bool) -> list[str]:
    if not split or len(text) < 40:
        return [f"{_ts(t_ns)} {stream} F {text}"]
    a, b = len(text) // 3, 2 * len(text) // 3
    return [f"{_ts(t_ns)} {stream} P {text[:a]}", f"{_ts(t_ns)} {stream} P {text[a:b]}",
            f"{_ts(t_ns)} {stream} F {text[b:]}"]


def generate(out: Path, lines: int, files: int = 8, seed: int = 1, split_share: float = 0.1,
             start_ns: int | None = None, span_s: float = 3600.0, json_share: float | None = None) -> list[Container]:
    """Write about ``lines`` CRI lines over ``files`` containers; returns the containers.
    ``split_share`` is the share of lines that are P/F pieces of a split line."""
    rng = random.Random(seed)
    containers = layout(out, files, rng, json_share)
    split_messages = split_share / (3 - 2 * split_share)  # a split message gives 3 lines
    start_ns = start_ns if start_ns is not None else time.time_ns() - int(span_s * 1e9)
    step = int(span_s * 1e9 / max(lines, 1))
    buffers: dict[Path, list[str]] = {c.path: [] for c in containers}
    t, written, pending = start_ns, 0, 0
    while written < lines:
        # a request: 1 to 4 services, one trace id, in time order
        hops = rng.sample(containers, k=min(len(containers), rng.randint(1, 4)))
        trace = _hex(rng, 32) if rng.random() < 0.7 else None
        for c in hops:
            t += step
            stream = "stderr" if rng.random() < 0.1 else "stdout"
            for ln in cri_lines(t, stream, message(rng, c, t, trace), rng.random() < split_messages):
                buffers[c.path].append(ln)
                written += 1
                pending += 1
        if pending >= 200_000:
            _flush(buffers)
            pending = 0
    _flush(buffers)
    return containers


def _flush(buffers: dict[Path, list[str]]) -> None:
    for path, buf in buffers.items():
        if buf:
            with path.open("a") as f:
                f.write("\n".join(buf) + "\n")
            buf.clear()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--lines", type=int, default=5000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--split-share", type=float, default=0.1)
    args = ap.parse_args()
    cs = generate(args.out, args.lines, args.files, args.seed, args.split_share)
    print(f"wrote about {args.lines} lines into {len(cs)} container logs under {args.out}")


if __name__ == "__main__":
    main()
