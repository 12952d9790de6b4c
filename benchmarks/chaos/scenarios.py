"""The scenario table and one scenario's run: set-up, the kill/rotation cycle loop, the drain and
the count, with every process stopped at the end."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from .components import Broker, Harness, pid_dead, write_config
from .count import census, count, drain, verify
from .options import ROOT, Options
from .report import jsonable, problems
from .writers import Writer, make_writers

MARKER = ".loglake-chaos-scratch"

# scenario -> (transport, components killed)
SCENARIOS: dict[str, tuple[str, tuple[str, ...]]] = {
    "none": ("spool", ()),
    "spool": ("spool", ("shipper", "aggregator")),
    "shipper": ("kafka", ("shipper",)),
    "aggregator": ("kafka", ("aggregator",)),
    "broker": ("kafka", ("broker",)),
    "mixed": ("kafka", ("shipper", "aggregator", "broker")),
}
DEFAULT_SCENARIOS = ("spool", "shipper", "aggregator", "broker", "mixed")


def code_state() -> dict:
    """The commit and the uncommitted changes of the code under test (results belong to this state)."""
    import hashlib
    out: dict = {}
    try:
        out["head"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                     timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--", "shipper", "aggregator", "schemas", "query"],
                                cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.splitlines()
        changed = sorted(line[3:] for line in status)
        digest = hashlib.sha256()
        for rel in changed:
            p = ROOT / rel
            if p.is_file():
                digest.update(rel.encode() + b"\0" + p.read_bytes())
        out["changed"] = changed
        out["changed_sha256"] = digest.hexdigest()[:16] if changed else None
    except (OSError, subprocess.SubprocessError) as e:
        out["error"] = str(e)
    return out


def prepare_scratch(scratch: Path) -> None:
    """Remove the scratch dir of an earlier run (only one this suite made), stopping any broker left in it."""
    scratch = scratch.resolve()
    if scratch.exists():
        if not (scratch / MARKER).exists():
            raise SystemExit(f"chaos: {scratch} exists but is not a chaos scratch dir ({MARKER} missing); "
                             "remove it or choose another --scratch")
        for pidfile in scratch.glob("*/kafka/kafka.pid"):
            try:
                pid = int(pidfile.read_text())
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"kafka.Kafka" in f.read():
                        os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    (scratch / MARKER).write_text("made by benchmarks.chaos; removed at the start of its next run\n")


def run_scenario(name: str, opts: Options, scratch: Path, log=print) -> dict:
    """Run one scenario under ``scratch/name``; returns its figures (see the module docstring)."""
    transport, targets = SCENARIOS[name]
    transport = opts.transport or transport
    kafka = transport == "kafka"
    if not kafka and "broker" in targets:
        raise ValueError(f"scenario {name} kills the broker: it needs the kafka transport")
    sdir = scratch / name
    if sdir.exists():
        shutil.rmtree(sdir)
    sdir.mkdir(parents=True)
    seed = opts.seed if opts.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    t_start = time.monotonic()
    h = Harness(sdir, t_start + opts.limit(kafka))
    stop, rotated = threading.Event(), threading.Event()
    writers: list[Writer] = []
    res: dict = {"scenario": name, "transport": transport, "targets": list(targets), "cycles": opts.cycles,
                 "seed": seed, "dir": str(sdir), "options": jsonable(asdict(opts)), "code": code_state(),
                 "errors": []}
    kills: Counter[str] = Counter()
    extra_rot: Counter[str] = Counter()
    durations: dict[str, float] = {}

    shipper_exe, aggregator_exe = str(opts.bin / "loglake-shipper"), str(opts.bin / "loglake-aggregator")
    shipper_cmd = [shipper_exe, "--config", "", "--log-level", "INFO"]
    aggregator_cmd = [aggregator_exe, "--config", "", "--log-level", "INFO"]

    def start(component: str) -> None:
        if component == "broker":
            assert h.broker is not None
            h.note("broker up", seconds=h.broker.up())
        else:
            h.start(component, shipper_cmd if component == "shipper" else aggregator_cmd)

    restarted: dict[str, float] = {}

    def watch(seconds: float, down: tuple[str, ...] = ()) -> None:
        """Sleep ``seconds``; a component that exits by itself meanwhile is noted and started again
        (at most every 2 s, so one that cannot start does not spin)."""
        end = time.monotonic() + seconds
        while True:
            for comp in ("shipper", "aggregator", "broker"):
                if comp in down or (comp == "broker" and h.broker is None):
                    continue
                if comp == "broker":
                    pid = h.broker.pid()
                    dead = pid is None or pid_dead(pid)
                    rc = None
                else:
                    dead = not h.alive(comp)
                    p = h.procs.get(comp)
                    rc = p.returncode if p is not None else None
                if dead and time.monotonic() - restarted.get(comp, -9.0) >= 2.0:
                    restarted[comp] = time.monotonic()
                    h.note("exited by itself; started again", component=comp, rc=rc)
                    res["errors"].append(f"{comp} exited by itself (rc {rc}) at "
                                         f"{time.monotonic() - t_start:.1f}s; started again")
                    start(comp)
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.2, left))

    def kill(component: str) -> None:
        kills[component] += 1
        if component == "broker":
            assert h.broker is not None
            h.broker.kill9()
        else:
            h.kill9(component)
        h.note("kill -9", component=component)

    def rotate_one(kind: str = "any", wait: bool = False) -> bool:
        rotated.clear()
        rng.choice(writers).ask(kind)
        return rotated.wait(3.0) if wait else True

    try:
        if kafka:
            h.broker = Broker(h, sdir / "kafka", opts.certs)
            log(f"[{name}] starting the chaos broker on {h.broker.bootstrap}")
            h.note("broker up", seconds=h.broker.up())
        config = write_config(sdir, opts, h.broker)
        shipper_cmd[2] = aggregator_cmd[2] = str(config)
        res["config"] = str(config)
        if kafka:
            for attempt in range(5):
                rc, out = h.run("topics", [aggregator_exe, "--config", str(config), "topics",
                                           "create"], 120)
                if rc == 0:
                    break
                time.sleep(2)
            else:
                raise RuntimeError(f"topics create failed: {out.strip()[-400:]}")
        writers = make_writers(sdir, opts, rng, rotated, stop)
        for w in writers:
            w.start()
        start("aggregator")
        start("shipper")
        watch(opts.warmup_s)
        durations["setup"] = round(time.monotonic() - t_start, 2)

        # chaos --------------------------------------------------------------
        t_chaos = time.monotonic()
        plan = [rng.choice(targets) for _ in range(opts.cycles)] if targets else []
        if len(targets) > 1 and opts.cycles >= len(targets):
            plan[:len(targets)] = rng.sample(targets, len(targets))
        res["cycles"] = len(plan)
        outage_cycle = opts.cycles // 2 if "broker" in targets and name == "broker" and opts.outage_s > 0 else None
        for cycle, target in enumerate(plan):
            h.check_time(f"cycle {cycle}")
            for w in writers:
                if w.error:
                    raise RuntimeError(f"writer {w.wid} failed: {w.error!r}")
            watch(rng.uniform(*opts.wait))
            after_rotation = bool(writers) and opts.rotate is not None and rng.random() < opts.kill_after_rotation_share
            if after_rotation and rotate_one(wait=True):
                extra_rot["before_kill"] += 1
            kill(target)
            down = opts.outage_s if cycle == outage_cycle else rng.uniform(*opts.down)
            h.note("down", component=target, seconds=round(down, 2), after_rotation=after_rotation,
                   outage=cycle == outage_cycle)
            t_down = time.monotonic()
            if opts.rotate is not None and rng.random() < opts.rotate_while_down_share:
                watch(min(down, 0.3) * rng.random(), down=(target,))
                rotate_one()
                extra_rot["while_down"] += 1
            watch(down - (time.monotonic() - t_down), down=(target,))
            start(target)
            log(f"[{name}] cycle {cycle + 1}/{opts.cycles}: {target} killed, down {down:.1f}s"
                + (", right after a rotation" if after_rotation else ""))
        if not plan:
            watch(opts.quiet_s)
        if opts.rotate is not None:
            done = Counter()
            for w in writers:
                done.update(w.rotations)
            for kind in ("rename", "copytruncate"):
                if not done[kind]:
                    rotated.clear()
                    writers[0 if kind == "copytruncate" else -1].ask(kind)
                    rotated.wait(3.0)
                    extra_rot["forced_" + kind] += 1
        watch(opts.settle_s)
        durations["chaos"] = round(time.monotonic() - t_chaos, 2)

        # drain --------------------------------------------------------------
        t_drain = time.monotonic()
        stop.set()
        for w in writers:
            w.join(timeout=30)
            if w.error:
                raise RuntimeError(f"writer {w.wid} failed: {w.error!r}")
        watch(opts.multiline_flush_ms / 1000 + 1.0 + opts.poll_interval_ms / 1000)
        drain(h, res, config, shipper_exe, aggregator_exe, opts.drain_rounds)
        durations["drain"] = round(time.monotonic() - t_drain, 2)

        # verify and count ---------------------------------------------------
        t_v = time.monotonic()
        res.update(verify(h, config, aggregator_exe))
        durations["verify"] = round(time.monotonic() - t_v, 2)
        t_c = time.monotonic()
        res.update(count(config, sdir, writers))
        res["census"] = census(sdir, {w.wid: w.written for w in writers})
        durations["count"] = round(time.monotonic() - t_c, 2)
    except (Exception, KeyboardInterrupt) as e:
        res["errors"].append(f"aborted: {e!r}")
        if isinstance(e, KeyboardInterrupt):
            raise
    finally:
        stop.set()
        for w in writers:
            w.join(timeout=10)
        h.cleanup()
        rot = Counter()
        for w in writers:
            rot.update(w.rotations)
        res["rotations"] = {**rot, **extra_rot}
        res["kills"] = dict(kills)
        res["events"] = h.events
        res["broker_start_s"] = [e["seconds"] for e in h.events if e["event"] == "broker up"]
        durations["total"] = round(time.monotonic() - t_start, 2)
        res["durations_s"] = durations
        res["agrees"] = (res["verify_ok"] == (res["lost"] == 0 and res["duplicated"] == 0)
                         if "verify_ok" in res and "lost" in res else None)
        res["problems"] = problems(res)
        res["ok"] = not res["problems"]
    return res

