"""Chaos suite: does every line written to a container log end up stored exactly once?

Writers append kubelet-style CRI logs while the shipper, the aggregator and the
Kafka broker are killed with SIGKILL and started again and the files are rotated;
then the pipeline is drained and every stored record is counted by the unique
sequence number its line carries.

    .venv/bin/python benchmarks/chaos.py                       # every scenario, long form (30 cycles each)
    .venv/bin/python benchmarks/chaos.py --short               # quick form; exits 1 on any loss/dup/disagreement
    .venv/bin/python benchmarks/chaos.py spool shipper --cycles 10
    .venv/bin/python benchmarks/chaos.py none --no-rotate      # the harness's own baseline: no kills, no rotations

Run it with the project's venv (it re-executes itself with .venv/bin/python when
the project does not import). Java and the broker jars (``make kafka-fetch``) are
needed for the Kafka scenarios; certificates come from ``var/certs`` (``--certs``).

What it writes
--------------
One writer thread per file (``--files``, default 8) under
``<scratch>/<scenario>/logs/pods/<ns>_<pod>_<uid>/app/0.log``, opened with
O_APPEND, at a steady total of ``--rate`` logical lines per second (default 2000,
spread evenly). Each logical line carries ``seq=<writer>:<n>`` once and ends with
``end=<writer>:<n>`` (so a record cut short or glued to another shows), as CRI
lines stamped with the real current time. The mix: plain text; JSON objects whose
``msg`` holds the seq; CRI partial lines (2-4 ``P`` pieces then an ``F`` piece,
sometimes with a complete line of the other stream between the pieces); Java stack
traces (``java.lang.IllegalStateException: boom seq=…`` then 3-8 ``\\tat …`` frames,
each its own CRI ``F`` line; the shipper runs with ``multiline = ["java"]``, so the
trace is one record holding the seq once). A writer finishes the logical line it
is on before it stops, so every counted line is complete in its file.

Rotations
---------
Every writer rotates its own file every ``--rotate`` seconds (15-40 s; 3-8 s with
``--short``), between two of its own writes:

- rename (kubelet): ``0.log`` → ``0.log.<YYYYMMDD-HHMMSS>`` (``-2``, ``-3`` … if the
  name is taken); the writer keeps writing into the renamed file through its old
  descriptor for 200-400 ms, then opens a fresh ``0.log``;
- copytruncate: ``0.log`` is copied to the first unused ``0.log.<N>``, then truncated
  to 0, and writing goes on through the same O_APPEND descriptor.

Because the writer itself rotates between its writes, no line is written between
the copy and the truncation: real copytruncate (logrotate) loses whatever the
application writes in that window, which no shipper can recover, and this suite
does not count that. Rotated files are never deleted or compressed: a file deleted
while the shipper is down is lost by deletion, which is not what this measures.
Writer 0's first rotation is a copytruncate, and a rename and a copytruncate are
forced at the end of the chaos phase if none happened, so every scenario with
rotations has both. ``--no-rotate`` turns rotation off.

Scenarios
---------
========== ========= ==============================================================
none       spool     no kills: writing for ``--quiet-s`` (30 s; 10 s with ``--short``);
                     with ``--no-rotate`` it is the harness's own baseline
spool      spool     kill -9 the shipper or the aggregator (random each cycle)
shipper    kafka     kill -9 the shipper
aggregator kafka     kill -9 the aggregator
broker     kafka     kill -9 the broker; one cycle is an outage of ``--outage-s``
                     (120 s; 20 s with ``--short``)
mixed      kafka     one of the three each cycle (the first three cycles are a
                     random order of all three, so each is hit when cycles >= 3)
========== ========= ==============================================================

``--transport`` overrides a scenario's transport. Each cycle waits 1-6 s (1-3 s
with ``--short``), kills, stays down 0.5-3 s (0.5-2 s) and starts the component
again; in about a third of the cycles the kill comes right after a rotation (a
writer is asked to rotate and signals through a threading.Event), and in about a
third a rotation happens while the component is down. A broker is started again
with ``kafka.sh up``, which returns once it answers over TLS, so it is down longer
than the drawn time by its start-up (a few seconds). A component that exited by
itself is noted and started again.

Kafka: a separate chaos broker (``deploy/kafka/kafka.sh up`` with its own free
ports, never 19093-19095, and ``KAFKA_DATA=<scenario>/kafka``), killed with kill -9
of ``$KAFKA_DATA/kafka.pid`` and stopped with ``kafka.sh down`` at the end (also on
errors and Ctrl-C). The topic is made with ``loglake-aggregator topics create``.

Drain and count
---------------
The writers stop; after ``multiline_flush_ms`` plus a second (so the open last
record of every file is flushed by the running shipper) the shipper and then the
aggregator get SIGTERM and exit; then ``loglake-shipper --once`` and
``loglake-aggregator --once`` run in rounds until a round stores nothing new. The
stored records are counted through ``query.connect(config)`` (the ``logs`` view,
every tier):

- written: logical lines the writers completed (their ledger, checked against a
  census of the ``seq=`` tokens in every file on disk: each must be there once);
- stored: rows; lost: seqs written but not stored; duplicated: rows beyond one per
  seq; orphans: rows with no seq (a piece of a line or of a stack trace stored on
  its own); mangled: rows whose body does not end with its own ``end=`` marker or
  holds more than one seq;
- ``loglake-aggregator verify``: exit code and last line; "agrees" means verify said
  OK exactly when lost == duplicated == 0;
- self-check: the same count over the ``logs`` view minus one stored row must show
  one more lost line, and over the view plus a second copy of one source file's
  rows must show that many more duplicates.

The first lost/duplicated/orphan records (writer, seq, kind, the file and offset
they were written at, the stored copies' paths and offsets) are kept in the JSON
for debugging, with lost lines summarised by the fate of their file
(``live``, ``renamed``, ``copied``: the copytruncate copy) and kind.

Output: a Markdown table on stdout and ``--json`` (default
``benchmarks/results/chaos.json``) with every figure, the command line, and the
git commit and uncommitted files of shipper/, aggregator/, schemas/ and query/ at
the start of each scenario. ``--bin DIR`` runs other entry points (e.g. wrappers
that import another revision) against the same harness. A
scenario "fails" on loss, duplicates, orphans, mangled records, verify disagreeing,
a census or self-check mismatch, or a drain that did not finish; with ``--short``
the exit status is 1 when any scenario fails.

Everything lives under ``--scratch`` (default ``var/chaos``), which is removed at
the start of a run (only if it holds this suite's marker file). Every process the
suite starts is killed at exit (try/finally and atexit); every wait has a timeout.
Uses only the standard library and the project itself.
"""

from __future__ import annotations

import argparse
import array
import atexit
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"
MARKER = ".loglake-chaos-scratch"
RESERVED_PORTS = {19093, 19094, 19095}
NAMESPACE = "chaos"
CONTAINER = "app"

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

PLAIN, JSON_LINE, PARTIAL, JAVA, INTERLEAVED = range(5)
KIND_NAMES = ("plain", "json", "partial", "java", "interleaved")
SEQ_RE = re.compile(rb"seq=(w\d+:\d+)\b")


@dataclass
class Options:
    cycles: int = 30
    rate: float = 2000.0                  # logical lines per second, all files together
    files: int = 8
    rotate: tuple[float, float] | None = (15.0, 40.0)   # None: no rotation
    wait: tuple[float, float] = (1.0, 6.0)
    down: tuple[float, float] = (0.5, 3.0)
    outage_s: float = 120.0
    warmup_s: float = 3.0
    settle_s: float = 3.0
    quiet_s: float = 30.0                 # scenario "none": how long the writers run with nothing killed
    partial_share: float = 0.06
    java_share: float = 0.04
    json_share: float = 0.3
    copytruncate_share: float = 0.35
    kill_after_rotation_share: float = 0.3
    rotate_while_down_share: float = 0.3
    transport: str | None = None          # override the scenario's transport
    certs: Path = ROOT / "var" / "certs"
    bin: Path = BIN                       # where loglake-shipper and loglake-aggregator are
    seed: int | None = None
    poll_interval_ms: int = 100
    multiline_flush_ms: int = 1000
    overrides: dict[str, dict[str, object]] = field(default_factory=dict)   # --set SECTION.KEY=VALUE
    drain_rounds: int = 6
    time_limit_s: float | None = None     # per scenario; default from the other figures

    @classmethod
    def short(cls, **kw: object) -> "Options":
        """The quick form: few cycles, short rotations and waits, a 20 s broker outage."""
        base = cls(cycles=4, rotate=(3.0, 8.0), wait=(1.0, 3.0), down=(0.5, 2.0), outage_s=20.0,
                   warmup_s=2.0, settle_s=2.0, quiet_s=10.0)
        return replace(base, **kw)

    def limit(self, kafka: bool) -> float:
        if self.time_limit_s:
            return self.time_limit_s
        per_cycle = self.wait[1] + self.down[1] + (40 if kafka else 10)
        return 240 + self.cycles * per_cycle + self.outage_s + (self.rotate[1] if self.rotate else 0)


# processes -------------------------------------------------------------------------

_LIVE: set["Harness"] = set()


def _cleanup_all() -> None:
    for h in list(_LIVE):
        h.cleanup()


atexit.register(_cleanup_all)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without LOGLAKE_* overrides (they would change the generated config)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGLAKE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port


def pid_dead(pid: int) -> bool:
    """Gone, or a zombie waiting to be reaped (its sockets and files are closed already)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    except OSError:
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True


class Deadline(Exception):
    pass


class Harness:
    """Every process of one scenario; ``cleanup`` kills whatever is left (also from atexit)."""

    def __init__(self, sdir: Path, deadline: float) -> None:
        self.sdir = sdir
        self.deadline = deadline
        self.logs = sdir / "proc"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.broker: Broker | None = None
        self.events: list[dict] = []
        self.t0 = time.monotonic()
        _LIVE.add(self)

    def note(self, what: str, **kw: object) -> None:
        self.events.append({"t": round(time.monotonic() - self.t0, 2), "event": what, **kw})

    def check_time(self, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise Deadline(f"time limit reached during {what}")

    def remaining(self, cap: float) -> float:
        return max(5.0, min(cap, self.deadline - time.monotonic() + 60))

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        out = (self.logs / f"{name}.log").open("ab")
        out.write(f"\n==== start {time.strftime('%H:%M:%S')} {shlex.join(argv)}\n".encode())
        out.flush()
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=child_env(), cwd=ROOT,
                             start_new_session=True)
        out.close()
        self.procs[name] = p
        return p

    def alive(self, name: str) -> bool:
        p = self.procs.get(name)
        return p is not None and p.poll() is None

    def kill9(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p is not None and p.poll() is None:
            p.kill()
        if p is not None:
            p.wait(timeout=30)

    def terminate(self, name: str, timeout: float) -> int | None:
        """SIGTERM and wait; SIGKILL after ``timeout``. The exit code, or None if it had to be killed."""
        p = self.procs.pop(name, None)
        if p is None:
            return None
        if p.poll() is not None:
            return p.returncode
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=30)
            return None

    def run(self, name: str, argv: list[str], timeout: float) -> tuple[int, str]:
        """Run to completion; (exit code, its output). The output also goes to proc/<name>.log."""
        t = time.monotonic()
        try:
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env(), cwd=ROOT,
                               timeout=self.remaining(timeout), start_new_session=True)
            rc, out = r.returncode, r.stdout.decode(errors="replace")
        except subprocess.TimeoutExpired as e:
            rc, out = -999, (e.stdout or b"").decode(errors="replace") + "\n[chaos: timed out]"
        with (self.logs / f"{name}.log").open("a") as f:
            f.write(f"\n==== run {shlex.join(argv)} -> {rc} in {time.monotonic() - t:.1f}s\n{out}")
        return rc, out

    def cleanup(self) -> None:
        for name in list(self.procs):
            try:
                self.kill9(name)
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
        if self.broker is not None:
            try:
                self.broker.down()
            except Exception:  # noqa: BLE001
                self.broker.kill9()
            self.broker = None
        _LIVE.discard(self)


class Broker:
    """The chaos broker: deploy/kafka/kafka.sh with its own ports and data directory."""

    def __init__(self, harness: Harness, data: Path, certs: Path) -> None:
        self.h = harness
        self.data = data
        self.certs = certs
        self.port, self.cport, self.sport = free_port(), free_port(), free_port()
        self.env = child_env({"KAFKA_PORT": str(self.port), "KAFKA_CONTROLLER_PORT": str(self.cport),
                              "KAFKA_SASL_PORT": str(self.sport), "KAFKA_DATA": str(data),
                              "LOGLAKE_CERTS": str(certs), "PYTHON": str(BIN / "python")})
        self.starts: list[float] = []

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.data / "kafka.pid"

    def _sh(self, action: str, timeout: float) -> tuple[int, str]:
        try:
            r = subprocess.run([str(KAFKA_SH), action], env=self.env, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=timeout, start_new_session=True)
            rc, out = r.returncode, r.stdout.decode(errors="replace")
        except subprocess.TimeoutExpired as e:
            rc, out = -999, (e.stdout or b"").decode(errors="replace") + "\n[chaos: timed out]"
        with (self.h.logs / "kafka.sh.log").open("a") as f:
            f.write(f"\n==== kafka.sh {action} -> {rc}\n{out}")
        return rc, out

    def up(self) -> float:
        t = time.monotonic()
        rc, out = self._sh("up", 180)
        if rc != 0:
            raise RuntimeError(f"chaos broker did not start (kafka.sh up exit {rc}): {out.strip()[-600:]}")
        self.starts.append(round(time.monotonic() - t, 2))
        return self.starts[-1]

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def kill9(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        end = time.monotonic() + 30
        while not pid_dead(pid) and time.monotonic() < end:
            time.sleep(0.05)
        # A zombie (nobody has reaped it yet) would still answer kill -0: kafka.sh would think it runs.
        self.pidfile.unlink(missing_ok=True)

    def down(self) -> None:
        pid = self.pid()
        if pid is not None and pid_dead(pid):
            self.pidfile.unlink(missing_ok=True)
            return
        rc, _ = self._sh("down", 60)
        if rc != 0 or (pid is not None and not pid_dead(pid)):
            if pid is not None and not pid_dead(pid):
                os.kill(pid, signal.SIGKILL)
            self.pidfile.unlink(missing_ok=True)


# writers ---------------------------------------------------------------------------

def cri_ts(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo")


class Writer(threading.Thread):
    """One file's writer. Its ledger holds, per seq n: kind, segment and byte offset of its first piece;
    a segment is one run of a file's content, named after where that content ends up."""

    def __init__(self, index: int, path: Path, rate: float, opts: Options, rng: random.Random,
                 rotated: threading.Event, stop: threading.Event) -> None:
        super().__init__(name=f"chaos-writer-{index}", daemon=True)
        self.wid = f"w{index}"
        self.path = path
        self.rate = rate
        self.opts = opts
        self.rng = rng
        self.rotated = rotated
        self.stop_event = stop
        self.kinds = bytearray()
        self.segs = array.array("i")
        self.offs = array.array("q")
        self.segments: list[list[str]] = []     # [path, fate: live | renamed | copied]
        self.rotations: Counter[str] = Counter()
        self.request: str | None = None          # "rename" | "copytruncate" | "any"
        self.error: BaseException | None = None
        self.fd = -1
        self.off = 0
        self.seg = -1
        self.reopen_at: float | None = None      # rename rotation: writing into the renamed file until then
        self._lock = threading.Lock()

    # ledger
    @property
    def written(self) -> int:
        return len(self.kinds)

    def where(self, n: int) -> tuple[str, str, str, int]:
        """(kind, file, fate, offset) of line n."""
        path, fate = self.segments[self.segs[n]]
        return KIND_NAMES[self.kinds[n]], path, fate, self.offs[n]

    def ask(self, kind: str = "any") -> None:
        with self._lock:
            self.request = self.request or kind

    # files
    def _new_segment(self) -> None:
        self.segments.append([str(self.path), "live"])
        self.seg = len(self.segments) - 1
        self.off = 0

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._new_segment()

    def _write(self, line: str) -> None:
        data = line.encode()
        done = 0
        while done < len(data):
            done += os.write(self.fd, data[done:])
        self.off += len(data)

    def _rotate(self, kind: str) -> None:
        if kind == "copytruncate":
            n = 1
            while (self.path.parent / f"{self.path.name}.{n}").exists():
                n += 1
            copy = self.path.parent / f"{self.path.name}.{n}"
            shutil.copyfile(self.path, copy)
            os.ftruncate(self.fd, 0)
            self.segments[self.seg] = [str(copy), "copied"]
            self._new_segment()
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            target, k = self.path.parent / f"{self.path.name}.{stamp}", 1
            while target.exists():
                k += 1
                target = self.path.parent / f"{self.path.name}.{stamp}-{k}"
            os.rename(self.path, target)
            self.segments[self.seg] = [str(target), "renamed"]
            self.reopen_at = time.monotonic() + self.rng.uniform(0.2, 0.4)
        self.rotations[kind] += 1
        self.rotated.set()

    # lines
    def _emit(self) -> None:
        rng, w = self.rng, self.wid
        n = len(self.kinds)
        r = rng.random()
        o = self.opts
        stream = "stderr" if rng.random() < 0.15 else "stdout"
        ts = cri_ts(time.time_ns())
        words = " ".join(rng.choices(WORDS, k=rng.randint(2, 12)))
        if r < o.partial_share:
            text = f"chaos partial seq={w}:{n} {words} {'x' * rng.randint(20, 300)} end={w}:{n}"
            head = len(f"chaos partial seq={w}:{n} ")
            cuts = sorted(rng.sample(range(head, len(text) - 1), rng.randint(1, 3)))
            pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
            self.kinds.append(PARTIAL)
            self.segs.append(self.seg)
            self.offs.append(self.off)
            between = rng.random() < 0.3
            for i, piece in enumerate(pieces[:-1]):
                self._write(f"{ts} {stream} P {piece}\n")
                if between and i == 0:
                    m, other = n + 1, "stdout" if stream == "stderr" else "stderr"
                    self.kinds.append(INTERLEAVED)
                    self.segs.append(self.seg)
                    self.offs.append(self.off)
                    self._write(f"{ts} {other} F chaos interleaved seq={w}:{m} {words} end={w}:{m}\n")
            self._write(f"{ts} {stream} F {pieces[-1]}\n")
            return
        self.segs.append(self.seg)
        self.offs.append(self.off)
        if r < o.partial_share + o.java_share:
            self.kinds.append(JAVA)
            frames = rng.randint(3, 8)
            self._write(f"{ts} {stream} F java.lang.IllegalStateException: boom seq={w}:{n}\n")
            for i in range(frames):
                tail = f" end={w}:{n}" if i == frames - 1 else ""
                self._write(f"{ts} {stream} F \tat com.x.Y.m{i}(Y.java:{12 + i}){tail}\n")
        elif r < o.partial_share + o.java_share + o.json_share:
            self.kinds.append(JSON_LINE)
            level = rng.choice(("info", "info", "warn", "error"))
            self._write(f'{ts} {stream} F {{"level":"{level}","msg":"chaos json seq={w}:{n} {words} end={w}:{n}",'
                        f'"n":{n}}}\n')
        else:
            self.kinds.append(PLAIN)
            self._write(f"{ts} {stream} F chaos plain seq={w}:{n} {words} end={w}:{n}\n")

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # noqa: BLE001 - reported by the orchestrator
            self.error = e

    def _next_rotation(self) -> float | None:
        if not self.opts.rotate:
            return None
        return time.monotonic() + self.rng.uniform(*self.opts.rotate)

    def _run(self) -> None:
        self._open()
        t0 = time.monotonic()
        emitted = 0
        next_rot = self._next_rotation()
        first = True
        while not self.stop_event.is_set():
            now = time.monotonic()
            if self.reopen_at is not None and now >= self.reopen_at:
                os.close(self.fd)
                self.reopen_at = None
                self._open()
            elif self.reopen_at is None:
                with self._lock:
                    req, self.request = self.request, None
                due_rotation = next_rot is not None and now >= next_rot
                if req or due_rotation:
                    kind = req if req in ("rename", "copytruncate") else None
                    if kind is None:
                        if first and self.wid == "w0":
                            kind = "copytruncate"
                        else:
                            kind = "copytruncate" if self.rng.random() < self.opts.copytruncate_share else "rename"
                    first = False
                    self._rotate(kind)
                    if due_rotation:
                        next_rot = self._next_rotation()
            due = int((now - t0) * self.rate) - emitted
            for _ in range(max(0, due)):
                self._emit()
                emitted += 1
            time.sleep(0.01)
        os.close(self.fd)
        self.fd = -1


def make_writers(sdir: Path, opts: Options, rng: random.Random, rotated: threading.Event,
                 stop: threading.Event) -> list[Writer]:
    writers = []
    for i in range(opts.files):
        uid = f"{rng.getrandbits(32):08x}-0000-4000-8000-{i:012d}"
        d = sdir / "logs" / "pods" / f"{NAMESPACE}_writer-{i}-{rng.getrandbits(20):05x}_{uid}" / CONTAINER
        d.mkdir(parents=True, exist_ok=True)
        writers.append(Writer(i, d / "0.log", opts.rate / opts.files, opts, random.Random(rng.random()),
                              rotated, stop))
    return writers


# config ----------------------------------------------------------------------------

def toml_value(v: object) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, Path):
        v = str(v)
    return json.dumps(v)


def write_config(sdir: Path, opts: Options, broker: Broker | None) -> Path:
    certs = opts.certs
    sections: dict[str, dict[str, object]] = {
        "shipper": {"node_name": "chaos-node", "include": [str(sdir / "logs" / "**" / "*.log")],
                    "data_dir": sdir / "shipper", "poll_interval_ms": opts.poll_interval_ms,
                    "batch_max_wait_ms": 100, "multiline": ["java"], "multiline_flush_ms": opts.multiline_flush_ms},
        "spool": {"dir": sdir / "spool"},
        "aggregator": {"data_dir": sdir / "lake", "group_id": "chaos", "flush_interval_ms": 500},
    }
    if broker is not None:
        sections["shipper"] |= {"tls_cert_file": certs / "shipper.crt", "tls_key_file": certs / "shipper.key"}
        sections["aggregator"] |= {"tls_cert_file": certs / "aggregator.crt", "tls_key_file": certs / "aggregator.key"}
        sections["kafka"] = {"bootstrap_servers": broker.bootstrap, "topic": "chaos.logs", "partitions": 2,
                             "ca_file": certs / "ca.crt", "request_timeout_ms": 10000}
    for section, values in opts.overrides.items():
        sections.setdefault(section, {}).update(values)
    lines = []
    for name, values in sections.items():
        lines += [f"[{name}]", *(f"{k} = {toml_value(v)}" for k, v in values.items()), ""]
    path = sdir / "loglake.toml"
    path.write_text("\n".join(lines))
    return path


# counting --------------------------------------------------------------------------

def _connect(config: Path):
    import query
    return query.connect(str(config), child_env())


COUNT_SQL = """
WITH t AS (SELECT regexp_extract(body, 'seq=(w[0-9]+:[0-9]+)', 1) AS seq, body FROM {src})
SELECT seq, count(*) AS copies,
       count(*) FILTER (WHERE NOT ends_with(body, 'end=' || seq)
                        OR length(body) - length(replace(body, 'seq=', '')) <> 4) AS mangled
FROM t GROUP BY seq"""


def stored_count(config: Path) -> int:
    try:
        return _connect(config).execute("SELECT count(*) FROM logs").fetchone()[0]
    except Exception as e:  # noqa: BLE001 - no catalog yet
        if "no catalog" in str(e) or "lists no stored files" in str(e):
            return 0
        raise


def tally(con, src: str = "logs") -> tuple[dict[str, int], int, int, int]:
    """(copies per seq, orphan rows, mangled rows, total rows) over the relation ``src``."""
    copies, orphans, mangled, rows = {}, 0, 0, 0
    for seq, c, bad in con.execute(COUNT_SQL.format(src=src)).fetchall():
        rows += c
        if seq == "":
            orphans += c
        else:
            copies[seq] = c
            mangled += bad
    return copies, orphans, mangled, rows


def compare(written: dict[str, int], copies: dict[str, int]) -> tuple[list[tuple[str, int]], int, list[str]]:
    """(lost (writer, n) in order, duplicated rows, stored seqs nobody wrote)."""
    lost = [(w, n) for w, total in sorted(written.items(), key=lambda x: int(x[0][1:]))
            for n in range(total) if f"{w}:{n}" not in copies]
    dup = sum(c - 1 for c in copies.values() if c > 1)
    unexpected = []
    for seq in copies:
        w, n = seq.split(":")
        if w not in written or int(n) >= written[w]:
            unexpected.append(seq)
    return lost, dup, sorted(unexpected)


def census(sdir: Path, written: dict[str, int]) -> dict:
    """The seq tokens in every file on disk: each written line must be there exactly once."""
    seen: Counter[str] = Counter()
    files = 0
    for p in sorted((sdir / "logs").rglob("*")):
        if p.is_file():
            files += 1
            seen.update(m.decode() for m in SEQ_RE.findall(p.read_bytes()))
    expected = {f"{w}:{n}" for w, total in written.items() for n in range(total)}
    missing = sorted(expected - set(seen))
    extra = sorted(set(seen) - expected)
    twice = sorted(s for s, c in seen.items() if c > 1)
    return {"files": files, "tokens": sum(seen.values()), "ok": not (missing or extra or twice),
            "missing": missing[:10], "extra": extra[:10], "twice": twice[:10]}


def _ranges(lost: list[tuple[str, int]], limit: int = 30) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lost) and len(out) < limit:
        w, a = lost[i]
        b = a
        while i + 1 < len(lost) and lost[i + 1] == (w, b + 1):
            i += 1
            b += 1
        out.append(f"{w}:{a}" if a == b else f"{w}:{a}-{b}")
        i += 1
    return out


def count(config: Path, sdir: Path, writers: list[Writer], samples: int = 10) -> dict:
    """Lost, duplicated, orphan and mangled records, with samples; plus the self-check."""
    written = {w.wid: w.written for w in writers}
    by_id = {w.wid: w for w in writers}
    rel = lambda p: os.path.relpath(p, sdir)  # noqa: E731
    try:
        con = _connect(config)
    except Exception as e:  # noqa: BLE001
        if "no catalog" not in str(e) and "lists no stored files" not in str(e):
            raise
        con = None
    if con is None:
        copies, orphans, mangled, rows = {}, 0, 0, 0
    else:
        copies, orphans, mangled, rows = tally(con)
    lost, dup, unexpected = compare(written, copies)
    out: dict = {"written": sum(written.values()), "written_by_writer": written, "stored": rows,
                 "stored_seqs": len(copies), "lost": len(lost), "duplicated": dup, "orphans": orphans,
                 "mangled": mangled, "unexpected": len(unexpected)}
    fates: Counter[str] = Counter()
    for w, n in lost:
        kind, _, fate, _ = by_id[w].where(n)
        fates[f"{fate}/{kind}"] += 1
    out["lost_by_fate"] = dict(sorted(fates.items()))
    out["lost_ranges"] = _ranges(lost)
    out["lost_samples"] = []
    for w, n in lost[:samples]:
        kind, path, fate, off = by_id[w].where(n)
        out["lost_samples"].append({"seq": f"{w}:{n}", "kind": kind, "file": rel(path), "fate": fate, "offset": off})
    dups = sorted((s for s, c in copies.items() if c > 1), key=lambda s: (int(s.split(":")[0][1:]), int(s.split(":")[1])))
    out["dup_samples"] = []
    dup_fates: Counter[str] = Counter()
    if dups and con is not None:
        for w_n in dups:
            w, n = w_n.split(":")
            kind, _, fate, _ = by_id[w].where(int(n)) if w in by_id and int(n) < written[w] else ("?", "", "?", 0)
            dup_fates[f"{fate}/{kind}"] += copies[w_n] - 1
        chosen = dups[:samples]
        rows_ = con.execute(
            "SELECT regexp_extract(body, 'seq=(w[0-9]+:[0-9]+)', 1) AS seq, source_path, source_id, source_offset "
            "FROM logs WHERE regexp_extract(body, 'seq=(w[0-9]+:[0-9]+)', 1) IN (SELECT unnest(?)) "
            "ORDER BY seq, source_path, source_offset", [chosen]).fetchall()
        stored_at: dict[str, list] = {}
        for seq, path, sid, off in rows_:
            stored_at.setdefault(seq, []).append({"source_path": rel(path) if path else None, "source_id": sid,
                                                  "source_offset": off})
        for seq in chosen:
            w, n = seq.split(":")
            kind, path, fate, off = by_id[w].where(int(n))
            out["dup_samples"].append({"seq": seq, "copies": copies[seq], "kind": kind, "written_to": rel(path),
                                       "fate": fate, "offset": off, "stored_at": stored_at.get(seq, [])})
    out["dup_by_fate"] = dict(sorted(dup_fates.items()))
    out["orphan_samples"] = []
    out["mangled_samples"] = []
    if con is not None and (orphans or mangled):
        out["orphan_samples"] = [
            {"source_path": rel(p), "source_offset": o, "body": b[:160]} for p, o, b in con.execute(
                "SELECT source_path, source_offset, body FROM logs WHERE regexp_extract(body, 'seq=(w[0-9]+:[0-9]+)', 1) = '' "
                "ORDER BY source_path, source_offset LIMIT ?", [samples]).fetchall()]
        out["mangled_samples"] = [
            {"source_path": rel(p), "source_offset": o, "body": b[:200]} for p, o, b in con.execute(
                "WITH t AS (SELECT regexp_extract(body, 'seq=(w[0-9]+:[0-9]+)', 1) AS seq, * FROM logs) "
                "SELECT source_path, source_offset, body FROM t WHERE seq <> '' AND (NOT ends_with(body, 'end=' || seq) "
                "OR length(body) - length(replace(body, 'seq=', '')) <> 4) ORDER BY 1, 2 LIMIT ?",
                [samples]).fetchall()]
    out["unexpected_samples"] = unexpected[:samples]
    out["self_check"] = self_check(con, written, copies, len(lost), dup) if con is not None else {
        "ok": None, "why": "nothing stored"}
    return out


def self_check(con, written: dict[str, int], copies: dict[str, int], lost: int, dup: int) -> dict:
    """Count again over tampered views of the lake: one stored row removed must be one more lost line;
    one source file's rows stored twice must be that many more duplicates."""
    result: dict = {}
    row = con.execute("SELECT source_id, source_offset, regexp_extract(body, 'seq=(w[0-9]+:[0-9]+)', 1) AS seq "
                      "FROM logs WHERE seq <> '' ORDER BY source_id, source_offset LIMIT 1").fetchone()
    if row is None:
        return {"ok": None, "why": "no stored row with a seq"}
    sid, off, seq = row
    con.execute("CREATE OR REPLACE TEMP VIEW chaos_minus_one AS SELECT * FROM logs "
                f"WHERE NOT (source_id = '{sid}' AND source_offset = {int(off)})")
    c2, _, _, _ = tally(con, "chaos_minus_one")
    l2, d2, _ = compare(written, c2)
    want = (lost + 1, dup) if copies.get(seq) == 1 else (lost, dup - 1)
    result["row_removed"] = {"seq": seq, "lost": len(l2), "duplicated": d2, "expected": list(want),
                             "ok": (len(l2), d2) == want}
    sid2, n_seq = con.execute(
        "SELECT source_id, count(*) FILTER (WHERE regexp_extract(body, 'seq=(w[0-9]+:[0-9]+)', 1) <> '') AS n "
        "FROM logs GROUP BY source_id ORDER BY n DESC, source_id LIMIT 1").fetchone()
    con.execute("CREATE OR REPLACE TEMP VIEW chaos_file_twice AS SELECT * FROM logs UNION ALL "
                f"SELECT * FROM logs WHERE source_id = '{sid2}'")
    c3, _, _, _ = tally(con, "chaos_file_twice")
    l3, d3, _ = compare(written, c3)
    result["file_twice"] = {"source_id": sid2, "rows": n_seq, "lost": len(l3), "duplicated": d3,
                            "expected": [lost, dup + n_seq], "ok": (len(l3), d3) == (lost, dup + n_seq)}
    result["ok"] = result["row_removed"]["ok"] and result["file_twice"]["ok"]
    return result


# a scenario ------------------------------------------------------------------------

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
    (scratch / MARKER).write_text("made by benchmarks/chaos.py; removed at the start of its next run\n")


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
                 "seed": seed, "dir": str(sdir), "options": _jsonable(asdict(opts)), "code": code_state(),
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
        for comp in ("shipper", "aggregator"):
            if not h.alive(comp):
                p = h.procs.get(comp)
                res["errors"].append(f"{comp} was not running at the drain (rc {p.returncode if p else None})")
        res["shipper_sigterm_rc"] = h.terminate("shipper", 40)
        res["aggregator_sigterm_rc"] = h.terminate("aggregator", 40)
        counts, rounds = [], []
        prev = -1
        drained = False
        for rnd in range(opts.drain_rounds):
            h.check_time("drain")
            rc1, _ = h.run("shipper-once", [shipper_exe, "--config", str(config), "--once",
                                            "--log-level", "WARNING"], 300)
            rc2, _ = h.run("aggregator-once", [aggregator_exe, "--config", str(config), "--once",
                                               "--log-level", "WARNING"], 300)
            n = stored_count(config)
            rounds.append({"shipper_rc": rc1, "aggregator_rc": rc2, "stored": n})
            if rc1 or rc2:
                res["errors"].append(f"drain round {rnd + 1}: shipper --once exit {rc1}, aggregator --once exit {rc2}")
            if n == prev and not (rc1 or rc2):
                drained = True
                break
            prev = n
        res["drain_rounds"] = rounds
        res["drained"] = drained
        durations["drain"] = round(time.monotonic() - t_drain, 2)

        # verify and count ---------------------------------------------------
        t_v = time.monotonic()
        rc, out = h.run("verify", [aggregator_exe, "--config", str(config), "verify"], 600)
        lines = [ln for ln in out.splitlines() if ln.strip()]
        res["verify_rc"] = rc
        res["verify_last"] = lines[-1] if lines else ""
        res["verify_ok"] = rc == 0 and res["verify_last"].strip() == "verify: OK"
        res["verify_summary"] = [ln for ln in lines if not ln.startswith("  ")][:8]
        res["verify_findings"] = [ln.strip() for ln in lines if ln.startswith("  ")][:20]
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


def problems(r: dict) -> list[str]:
    """Why a scenario's result is not "every line exactly once, and verify says so"."""
    if "lost" not in r:
        return [*r.get("errors", []), "not counted"]
    out = []
    if r["lost"]:
        out.append(f"{r['lost']} lost (first: {', '.join(r['lost_ranges'][:8])}; by file fate: {r['lost_by_fate']})")
    if r["duplicated"]:
        out.append(f"{r['duplicated']} duplicated (first: {', '.join(d['seq'] for d in r['dup_samples'][:8])}; "
                   f"by file fate: {r['dup_by_fate']})")
    if r["orphans"]:
        out.append(f"{r['orphans']} rows without a seq")
    if r["mangled"]:
        out.append(f"{r['mangled']} mangled rows")
    if r["unexpected"]:
        out.append(f"{r['unexpected']} stored seqs never written")
    if not r.get("agrees"):
        out.append(f"verify says {r.get('verify_last')!r} (exit {r.get('verify_rc')}) with {r['lost']} lost and "
                   f"{r['duplicated']} duplicated")
    if not r.get("census", {}).get("ok"):
        out.append(f"census of the files on disk disagrees with the writers' ledger: {r.get('census')}")
    if r.get("self_check", {}).get("ok") is False:
        out.append(f"self-check failed: {r['self_check']}")
    if not r.get("drained"):
        out.append("the drain did not settle")
    out += r.get("errors", [])
    return out


def describe(r: dict) -> str:
    """A failure message for tests: the figures and the first lost/duplicated seqs with their files."""
    lines = [f"scenario {r['scenario']} ({r['transport']}, seed {r.get('seed')}, kills {r.get('kills')}, "
             f"rotations {r.get('rotations')}): written {r.get('written')}, stored {r.get('stored')}, "
             f"lost {r.get('lost')}, duplicated {r.get('duplicated')}, orphans {r.get('orphans')}, "
             f"verify {r.get('verify_last')!r}"]
    lines += [f"  - {p}" for p in r.get("problems", [])]
    for s in r.get("lost_samples", []):
        lines.append(f"  lost {s['seq']} ({s['kind']}) written to {s['file']} [{s['fate']}] at offset {s['offset']}")
    for s in r.get("dup_samples", []):
        at = "; ".join(f"{a['source_path']}@{a['source_offset']}" for a in s["stored_at"])
        lines.append(f"  duplicated {s['seq']} x{s['copies']} ({s['kind']}) written to {s['written_to']} "
                     f"[{s['fate']}] at {s['offset']}; stored at {at}")
    lines.append(f"  data: {r.get('dir')}")
    return "\n".join(lines)


def _jsonable(v: object) -> object:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def table(results: list[dict]) -> str:
    head = ("scenario", "transport", "cycles", "kills s/a/b", "rotations ren/ct", "written", "stored", "lost",
            "dup", "orphan/mangled", "verify", "verify agrees", "self-check", "time")
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        k = r.get("kills", {})
        rot = r.get("rotations", {})
        sc = r.get("self_check", {}).get("ok")
        rows.append("| " + " | ".join(str(x) for x in (
            r["scenario"], r["transport"], r["cycles"],
            f"{k.get('shipper', 0)}/{k.get('aggregator', 0)}/{k.get('broker', 0)}",
            f"{rot.get('rename', 0)}/{rot.get('copytruncate', 0)}",
            r.get("written", "-"), r.get("stored", "-"), r.get("lost", "-"), r.get("duplicated", "-"),
            f"{r.get('orphans', '-')}/{r.get('mangled', '-')}",
            "OK" if r.get("verify_ok") else ("FAILED" if "verify_ok" in r else "-"),
            {True: "yes", False: "NO", None: "-"}[r.get("agrees")],
            {True: "ok", False: "FAILED", None: "-"}[sc],
            f"{r['durations_s'].get('total', 0):.0f} s")) + " |")
    return "\n".join(rows)


# command line ----------------------------------------------------------------------

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
    try:
        import query  # noqa: F401
    except ImportError:
        venv_python = BIN / "python"
        if venv_python.exists() and Path(sys.executable).resolve() != venv_python.resolve():
            os.execv(str(venv_python), [str(venv_python), __file__, *(sys.argv[1:] if argv is None else argv)])
        raise
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    command = [sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *argv]
    doc = {"command": shlex.join(command), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "options": _jsonable(asdict(opts)), "scenarios": []}
    t0 = time.monotonic()
    interrupted = False
    try:
        for name in names:
            print(f"== {name}", flush=True)
            r = run_scenario(name, opts, args.scratch.resolve(), log=lambda m: print(m, flush=True))
            doc["scenarios"].append(r)
            print(("ok" if r["ok"] else "FAILED:\n" + describe(r)), flush=True)
            _save(args.json, doc, t0)
    except KeyboardInterrupt:
        interrupted = True
        print("chaos: interrupted; every process it started is stopped", file=sys.stderr)
    finally:
        _cleanup_all()
        _save(args.json, doc, t0)
    print()
    print(table(doc["scenarios"]))
    print(f"\n{len(doc['scenarios'])} scenarios in {time.monotonic() - t0:.0f} s; details in {args.json}")
    if interrupted:
        return 130
    failed = [r["scenario"] for r in doc["scenarios"] if not r["ok"]]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if args.short and failed else 0


def _save(path: Path, doc: dict, t0: float) -> None:
    doc["duration_s"] = round(time.monotonic() - t0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
