"""Sequence-numbered CRI writers: one thread per file, appending plain, JSON, partial and Java
stack-trace lines that each carry ``seq=<writer>:<n>``, and rotating their own file (rename or
copytruncate) between two of their writes; each keeps a ledger of where every line went."""

from __future__ import annotations

import array
import os
import random
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

from .options import Options

NAMESPACE = "chaos"
CONTAINER = "app"

PLAIN, JSON_LINE, PARTIAL, JAVA, INTERLEAVED = range(5)
KIND_NAMES = ("plain", "json", "partial", "java", "interleaved")


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

