"""One odd entry in the log tree must not stop the shipper: a file name that is not UTF-8 is shipped
(its bad bytes shown as U+FFFD in source_path), and symlink loops under ``**`` are walked once."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aggregator.cli.run import main as aggregator
from shipper.cli import main as shipper
from shipper.discovery import match_glob
from tests.conftest import cri, pod_log, write_config

ROOT = Path(__file__).resolve().parent.parent


def stored(config: Path) -> list[tuple[str, str, str]]:
    import query
    assert aggregator(["--config", str(config), "--once", "--log-level", "WARNING"]) == 0
    return query.connect(str(config)).execute(
        "SELECT body, source_path, coalesce(container, '') FROM logs ORDER BY body").fetchall()


def test_file_name_not_utf8_is_shipped_beside_the_others(tmp_path, capfd):
    config = write_config(tmp_path)
    normal = pod_log(tmp_path, "shop", "web-1", "nginx")
    normal.write_text(cri("2026-11-24T10:00:00Z", "normal line"))
    d = os.fsencode(normal.parent)
    fd = os.open(d + b"/caf\xe9.log", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, cri("2026-11-24T10:00:01Z", "from cafe").encode())
    os.close(fd)
    # a container directory whose name is not UTF-8: the metadata taken from the path is made valid too
    bad_dir = os.fsencode(normal.parent.parent) + b"/ngin\xff"
    os.mkdir(bad_dir)
    fd = os.open(bad_dir + b"/0.log", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, cri("2026-11-24T10:00:02Z", "from bad dir").encode())
    os.close(fd)

    assert shipper(["--config", str(config), "--once"]) == 0
    err = capfd.readouterr().err
    assert "Traceback" not in err and "UnicodeEncodeError" not in err
    assert err.count("not valid UTF-8") == 2          # one warning per such file
    rows = stored(config)
    assert [r[0] for r in rows] == ["from bad dir", "from cafe", "normal line"]
    paths = {r[0]: r[1] for r in rows}
    assert paths["from cafe"] == str(normal.parent / "caf\ufffd.log")
    assert paths["normal line"] == str(normal)
    assert {r[0]: r[2] for r in rows}["from bad dir"] == "ngin\ufffd"
    # a second run resumes from the checkpoint (which it could write): nothing read twice
    assert shipper(["--config", str(config), "--once", "--log-level", "WARNING"]) == 0
    assert [r[0] for r in stored(config)] == ["from bad dir", "from cafe", "normal line"]


def make_loops(tmp: Path) -> list[Path]:
    logs = [pod_log(tmp, "shop", f"web-{i}", "nginx") for i in range(2)]
    for i, p in enumerate(logs):
        p.write_text("".join(cri(f"2026-11-24T10:00:0{i}.{j:09d}Z", f"pod {i} line {j}") for j in range(3)))
    os.symlink(".", tmp / "logs" / "a")
    os.symlink("..", tmp / "logs" / "pods" / "b")
    os.symlink("..", logs[0].parent / "b")
    os.symlink("../..", logs[1].parent / "up")
    return logs


def run_shipper(config: Path, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "shipper.cli", "--config", str(config), "--log-level", "WARNING",
                             *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


EXPECTED = [f"pod {i} line {j}" for i in range(2) for j in range(3)]


def test_symlink_loops_under_double_star_once_finishes(tmp_path):
    config = write_config(tmp_path)
    logs = make_loops(tmp_path)
    proc = run_shipper(config, "--once")
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    rows = stored(config)
    assert [r[0] for r in rows] == EXPECTED                       # each line once
    assert {r[1] for r in rows} == {str(p) for p in logs}         # named by their real paths


def test_symlink_loops_running_shipper_stops_on_sigterm(tmp_path):
    config = write_config(tmp_path, shipper={"poll_interval_ms": 50})
    make_loops(tmp_path)
    proc = run_shipper(config)
    try:
        time.sleep(1.5)
        assert proc.poll() is None
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 10
    finally:
        proc.kill()
        proc.wait()
    assert [r[0] for r in stored(config)] == EXPECTED


def test_match_glob_is_glob_on_a_tree_without_symlinks(tmp_path):
    for rel in ("x.log", "a/y.log", "a/b/z.log", "a/b/z.txt", ".hidden/h.log", "a/.h/i.log", "a/.j.log", "c/d/e/f.log"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x\n")
    for pattern in ("**/*.log", "a/**/*.log", "*/**/z.*", "**", "a/**", "**/b/*.log", "*/b/*", "c/**/e/*.log",
                    "**/.h/*.log", "a/**/.j.log"):
        full = str(tmp_path / pattern)
        assert sorted(match_glob(full)) == sorted(glob.glob(full, recursive=True)
                                                 if pattern.endswith("*.log") or "**" not in pattern
                                                 else [p for p in glob.glob(full, recursive=True)
                                                       if not os.path.isdir(p)]), pattern
