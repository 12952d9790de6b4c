"""Bounded descriptors: more log files than the process may open, in the real shipper process.

The shipper runs with RLIMIT_NOFILE lowered to 256 (soft and hard, as ``ulimit -n 256`` or
``prlimit --nofile=256``) and tails 1,200 files. Every line carries a sequence number and is counted
in the lake through the real aggregator; the descriptors the process holds are sampled from
/proc/<pid>/fd all along. Before descriptors were bounded, this shipper wedged with EMFILE (no spool
segment, buffer file or checkpoint could be written) and shipped nothing.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from tests.conftest import cri, pod_log, write_config
from tests.test_rotation import exactly, seqs, verify

ROOT = Path(__file__).resolve().parent.parent
NOFILE = 256
FILES = 1200
TS = "2026-12-01T10:{:02d}:{:02d}.{:09d}Z"

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to count descriptors")


class Seq:
    """Sequence numbers handed out in order; lines of one file get increasing timestamps."""

    def __init__(self) -> None:
        self.n = 0

    def lines(self, k: int) -> str:
        out = "".join(cri(TS.format(i // 60000 % 60, i // 1000 % 60, i), f"seq={i} payload")
                      for i in range(self.n, self.n + k))
        self.n += k
        return out


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


class FdSampler(threading.Thread):
    """The largest number of descriptors ``pid`` held, sampled every few milliseconds."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.now, self.samples = pid, 0, 0, 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                self.now = len(os.listdir(f"/proc/{self.pid}/fd"))
            except OSError:
                return
            self.peak, self.samples = max(self.peak, self.now), self.samples + 1
            time.sleep(0.005)

    def stop(self) -> None:
        self._done.set()
        self.join()


def shipped_to_end(config_dir: Path, files: list[Path]) -> bool:
    """Has the checkpoint (saved only after acknowledgement) reached the end of every file?"""
    try:
        data = orjson.loads((config_dir / "shipper" / "checkpoints.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    done = {s["path"]: s["offset"] for s in data["sources"].values()}
    return all(done.get(str(p)) == p.stat().st_size for p in files)


def wait(what: str, cond, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"the shipper exited while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def start(config: Path, log: Path, **kw) -> subprocess.Popen:
    """The shipper as its own process, logging at INFO into ``log`` (a file: a pipe nobody reads
    while it runs would fill and block it)."""
    with log.open("wb") as err:
        return subprocess.Popen([sys.executable, "-m", "shipper.cli", "--config", str(config), "--log-level", "INFO"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, **kw)


def stopped(proc: subprocess.Popen, log: Path) -> tuple[str, dict]:
    """SIGTERM; (everything it logged, the counters of its last line)."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    text = log.read_text()
    last = orjson.loads(text.strip().splitlines()[-1])
    assert last["message"] == "shipper stopped", last
    return text, last


def lowered_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def test_budget_leaves_headroom_and_honours_the_setting():
    from shipper.slots import budget
    assert budget(0, 1024) == 960 and budget(0, 256) == 192 and budget(0, 100) == 75
    assert budget(500, 1024) == 500 and budget(5000, 1024) == 960
    assert budget(0, resource.RLIM_INFINITY) == 1 << 20 and budget(300, resource.RLIM_INFINITY) == 300


def test_counted_once_per_waiting_file():
    from shipper.slots import Slots
    errors: Counter[str] = Counter()
    slots = Slots(2, errors)
    for _ in range(3):
        slots.wait("/a", 1.0, (1, 1))
    slots.wait("/b", 2.0, (1, 2))
    wanted = [("/c", (1, 3)), ("/b", (1, 2)), ("/a", (1, 1))]
    assert errors["open_files_limit"] == 2 and [p for p, _ in slots.order(wanted)] == ["/a", "/b", "/c"]
    slots.served("/a")
    slots.served("/b")
    assert not slots.waiting


def test_more_files_than_descriptors_every_line_once_descriptors_bounded(tmp_path, capsys):
    config = write_config(tmp_path, shipper={"poll_interval_ms": 50, "close_idle_after_ms": 400,
                                             "rotate_wait_ms": 300})
    seq = Seq()
    files = [pod_log(tmp_path, "shop", f"web-{i}", "nginx", uid=f"00000000-0000-4000-8000-{i:012d}")
             for i in range(FILES)]
    for p in files:
        p.write_text(seq.lines(3))
    proc = start(config, tmp_path / "shipper.log", preexec_fn=lowered_nofile)
    sampler = FdSampler(proc.pid)
    sampler.start()
    t0 = time.monotonic()
    try:
        wait("every file shipped", lambda: shipped_to_end(tmp_path, files), proc)
        first_pass_s = time.monotonic() - t0
        # idle files are closed: the shipper holds little more than its own descriptors
        wait("idle files closed", lambda: sampler.now < 64, proc, timeout=30)
        idle_fds = sampler.now

        # appended to while closed: opened again by path and read on from the position
        appended = files[::10]
        for p in appended:
            append(p, seq.lines(2))
        # rotated while closed, both ways a runtime does it: written then renamed, and renamed then
        # written into through its old descriptor; a new file takes the path
        rotated = files[5::50]
        moved_files = [p.with_name("0.log.20261201-120000") for p in rotated]
        for k, (p, moved) in enumerate(zip(rotated, moved_files)):
            if k % 2:
                append(p, seq.lines(2))
                p.rename(moved)
            else:
                p.rename(moved)
                append(moved, seq.lines(2))
            p.write_text(seq.lines(1))
        wait("appended and rotated lines shipped", lambda: shipped_to_end(tmp_path, files + moved_files), proc)
        time.sleep(1.0)   # the rotated files' rotate_wait, and a last checkpoint save
        text, stats = stopped(proc, tmp_path / "shipper.log")
    finally:
        proc.kill()
        sampler.stop()
    assert "Traceback" not in text and "Too many open files" not in text
    assert text.count("open files limit reached") >= 1
    # the paths under test were taken: files closed while idle, and the rotated ones found and read on
    assert stats["files_idle_closed"] >= FILES and stats["rotated_files_adopted"] >= len(rotated), stats
    assert sampler.samples > 100 and sampler.peak < NOFILE, f"peak {sampler.peak} descriptors"
    found = seqs(config)
    exactly(found, seq.n)                            # 0 lost, 0 duplicated
    rc, out = verify(config, capsys)
    assert rc == 0, out
    print(f"\n{FILES} files, RLIMIT_NOFILE {NOFILE}: first pass {first_pass_s:.1f} s, peak {sampler.peak} fds "
          f"({sampler.samples} samples), {idle_fds} fds once idle, {seq.n} lines exactly once; "
          f"closed while idle {stats['files_idle_closed']}, rotated files read on {stats['rotated_files_adopted']}")


@pytest.mark.parametrize("after", [2, 40], ids=["shorter", "grown-past-its-old-size"])
def test_a_file_truncated_while_closed_is_read_from_its_start_and_its_copy_on(tmp_path, capsys, after):
    """copytruncate while the file was closed for being idle: the copy goes on from the position, the
    truncated file is read from 0; nothing lost or stored twice. Also when the app wrote more than the
    old size before the shipper looked again (the size alone no longer tells it was truncated)."""
    config = write_config(tmp_path, shipper={"poll_interval_ms": 50, "close_idle_after_ms": 200,
                                             "rotate_wait_ms": 1000})
    seq = Seq()
    live = pod_log(tmp_path, "shop", "web-1", "nginx")
    live.write_text(seq.lines(5))
    proc = start(config, tmp_path / "shipper.log")
    try:
        wait("the file shipped", lambda: shipped_to_end(tmp_path, [live]), proc)
        time.sleep(0.6)   # closed for being idle
        append(live, seq.lines(3))
        copy = live.with_name("0.log.1")
        copy.write_bytes(live.read_bytes())
        with live.open("r+") as f:
            f.truncate(0)
        append(live, seq.lines(after))
        wait("both shipped", lambda: shipped_to_end(tmp_path, [live]), proc)
        time.sleep(2)   # the copy is read and closed after rotate_wait (1 s)
        text, stats = stopped(proc, tmp_path / "shipper.log")
    finally:
        proc.kill()
    assert "Traceback" not in text and stats["files_idle_closed"] >= 1 and stats["truncations"] + \
        stats["rotated_files_adopted"] >= 1, stats
    exactly(seqs(config), seq.n)
    assert verify(config, capsys)[0] == 0


def test_files_rotated_while_waiting_for_a_descriptor_are_read_fully(tmp_path, capsys):
    """``max_open_files = 2`` and 60 files: most wait for a descriptor. Files rotated while they wait,
    never opened yet, are found beside their paths and read from 0, also one not written to since the
    shipper started (older than its history by time, but owed a read)."""
    config = write_config(tmp_path, shipper={"poll_interval_ms": 200, "max_open_files": 2, "close_idle_after_ms": 0,
                                             "rotate_wait_ms": 300})
    seq = Seq()
    files = sorted((pod_log(tmp_path, "shop", f"web-{i}", "nginx", uid=f"00000000-0000-4000-8000-{i:012d}")
                    for i in range(60)), key=str)
    for p in files:
        p.write_text(seq.lines(4))
    log = tmp_path / "shipper.log"
    proc = start(config, log)
    try:
        wait("files waiting", lambda: "open files limit reached" in log.read_text(), proc, timeout=30)
        for k, p in enumerate(files[-5:]):   # served last: still waiting
            moved = p.with_name("0.log.1")
            p.rename(moved)
            if k < 2:
                append(moved, seq.lines(2))  # the runtime still writes into it
            p.write_text(seq.lines(1))
        wait("every file shipped", lambda: shipped_to_end(tmp_path, files), proc, timeout=60)
        time.sleep(1.5)
        text, stats = stopped(proc, log)
    finally:
        proc.kill()
    assert "Traceback" not in text and stats["rotated_files_adopted"] >= 5, stats
    exactly(seqs(config), seq.n)
    assert verify(config, capsys)[0] == 0
