"""The shipper following files through their life, on real files and the spool transport."""

from __future__ import annotations

import asyncio
import gzip
import os
import time
from pathlib import Path

from aggregator.cli.run import main as aggregator
from shipper import config as shipper_config
from shipper.agent import Agent
from shipper.cli import main as shipper
from shipper.transport import create
from tests.conftest import cri, write_config

TS = "2026-11-24T10:00:{:02d}.{:09d}Z"


def line(i: int, text: str | None = None, stream: str = "stdout") -> str:
    return cri(TS.format(i // 1000 % 60, i), text or f"line {i}", stream)


def bodies(config: Path) -> list[str]:
    import query
    assert aggregator(["--config", str(config), "--once", "--log-level", "WARNING"]) == 0
    return [r[0] for r in query.connect(str(config)).execute(
        "SELECT body FROM logs ORDER BY time, source_offset").fetchall()]


class Running:
    """An agent running in the background of the test's event loop."""

    def __init__(self, config: Path) -> None:
        self.settings = shipper_config.load(str(config))
        self.transport = create(self.settings.transport, self.settings.shipper)

    async def __aenter__(self) -> "Running":
        await self.transport.start()
        self.agent = Agent(self.settings, self.transport)
        self.task = asyncio.create_task(self.agent.run())
        return self

    async def settle(self, seconds: float = 0.6) -> None:
        await asyncio.sleep(seconds)

    async def __aexit__(self, *exc) -> None:
        self.agent.stop()
        await asyncio.wait_for(self.task, 15)
        await self.transport.close()


def fast(tmp: Path, **extra: object) -> Path:
    return write_config(tmp, shipper={"poll_interval_ms": 50, "rotate_wait_ms": 300, **extra})


def log_dir(tmp: Path) -> Path:
    d = tmp / "logs" / "pods" / "shop_web-1_0f1e2d3c-0000-4000-8000-000000000001" / "nginx"
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_rename_rotation_reads_old_file_to_its_end(tmp_path):
    config = fast(tmp_path)
    d = log_dir(tmp_path)
    live = d / "0.log"

    async def scenario():
        live.write_text(line(1) + line(2))
        async with Running(config) as r:
            await r.settle()
            with live.open("a") as f:        # written after our last read, just before rotation
                f.write(line(3))
            os.rename(live, d / "0.log.20261124-100003")
            live.write_text(line(4))
            await r.settle(1.0)
            assert r.agent.stats["rotations"] == 1
            assert r.agent.stats["files_closed"] == 1      # the rotated file, after rotate_wait
            assert len(r.agent.files.retired) == 0
    asyncio.run(scenario())
    assert bodies(config) == ["line 1", "line 2", "line 3", "line 4"]


def test_rotation_faster_than_the_poll_interval(tmp_path):
    config = fast(tmp_path, poll_interval_ms=400)
    d = log_dir(tmp_path)
    live = d / "0.log"

    async def scenario():
        live.write_text(line(1))
        async with Running(config) as r:
            await r.settle(0.6)
            # two rotations between two polls: file B lives and goes without being seen at 0.log
            os.rename(live, d / "0.log.1")
            live.write_text(line(2) + line(3))
            os.rename(d / "0.log.1", d / "0.log.2")
            os.rename(live, d / "0.log.1")
            live.write_text(line(4))
            await r.settle(1.5)
    asyncio.run(scenario())
    assert bodies(config) == ["line 1", "line 2", "line 3", "line 4"]


def test_copytruncate_rereads_from_zero(tmp_path):
    config = fast(tmp_path)
    live = log_dir(tmp_path) / "0.log"

    async def scenario():
        live.write_text(line(1) + line(2) + line(3))
        async with Running(config) as r:
            await r.settle()
            with live.open("r+") as f:
                f.truncate(0)
            await r.settle(0.3)
            live.write_text(line(4))
            await r.settle()
            assert r.agent.stats["truncations"] == 1
    asyncio.run(scenario())
    assert bodies(config) == ["line 1", "line 2", "line 3", "line 4"]


def test_deleted_file_is_drained_and_closed(tmp_path):
    config = fast(tmp_path)
    live = log_dir(tmp_path) / "0.log"

    async def scenario():
        live.write_text(line(1))
        async with Running(config) as r:
            await r.settle()
            with live.open("a") as f:
                f.write(line(2))
            live.unlink()
            await r.settle(1.0)
            assert r.agent.stats["files_closed"] == 1 and not r.agent.files.active and not r.agent.files.retired
            fds = os.listdir("/proc/self/fd")
            assert not any(os.readlink(f"/proc/self/fd/{fd}").startswith(str(live)) for fd in fds
                           if os.path.islink(f"/proc/self/fd/{fd}"))
    asyncio.run(scenario())
    assert bodies(config) == ["line 1", "line 2"]


def test_new_files_are_picked_up_within_a_second(tmp_path):
    config = fast(tmp_path, poll_interval_ms=250)

    async def scenario():
        async with Running(config) as r:
            await r.settle(0.3)
            (log_dir(tmp_path) / "0.log").write_text(line(1))
            t0 = time.monotonic()
            while r.agent.delivery.stats["records_shipped"] < 1:
                await asyncio.sleep(0.02)
                assert time.monotonic() - t0 < 1.0
    asyncio.run(scenario())
    assert bodies(config) == ["line 1"]


def test_compressed_rotated_files_and_excludes_are_ignored(tmp_path):
    config = fast(tmp_path, exclude=["*.gz", "*/skip-me/*"], include=[str(tmp_path / "logs" / "**" / "*")])
    d = log_dir(tmp_path)
    (d / "0.log").write_text(line(1))
    with gzip.open(d / "0.log.1.gz", "wt") as f:
        f.write(line(2))
    skip = tmp_path / "logs" / "skip-me"
    skip.mkdir()
    (skip / "x.log").write_text(line(3))
    assert shipper(["--config", str(config), "--once"]) == 0
    assert bodies(config) == ["line 1"]


def test_docker_json_file_and_plain_files(tmp_path):
    config = write_config(tmp_path)
    cid = "c" * 64
    docker = tmp_path / "logs" / "docker" / cid / f"{cid}-json.log"
    docker.parent.mkdir(parents=True)
    docker.write_text(
        '{"log":"part one ","stream":"stdout","time":"2026-11-24T10:00:00.000000001Z"}\n'
        '{"log":"and two\\n","stream":"stdout","time":"2026-11-24T10:00:00.000000002Z"}\n'
        '{"log":"{\\"level\\":\\"error\\",\\"msg\\":\\"json inside\\"}\\n","stream":"stderr","time":"2026-11-24T10:00:01Z"}\n')
    plain = tmp_path / "logs" / "app" / "server.log"
    plain.parent.mkdir(parents=True)
    plain.write_text("2026-11-24 10:00:02 WARN plain text\r\n")
    assert shipper(["--config", str(config), "--once"]) == 0
    import query
    assert aggregator(["--config", str(config), "--once"]) == 0
    rows = query.connect(str(config)).execute(
        "SELECT container_id, stream, severity_number, body FROM logs ORDER BY source_path, source_offset"
    ).fetchall()
    assert rows == [(None, None, 13, "2026-11-24 10:00:02 WARN plain text"),
                    (cid, "stdout", 0, "part one and two"), (cid, "stderr", 17, "json inside")]


def test_symlink_and_its_target_are_read_once(tmp_path):
    """The usual DaemonSet globs match /var/log/containers/*.log symlinks and the /var/log/pods files."""
    from tests.conftest import pod_log
    real = pod_log(tmp_path, "shop", "web-1", "nginx")
    real.write_text("".join(line(i) for i in range(3)))
    links = tmp_path / "logs" / "containers"
    links.mkdir()
    (links / "web-1_shop_nginx-0123abcd.log").symlink_to(real)
    config = write_config(tmp_path)
    assert shipper(["--config", str(config), "--once"]) == 0
    assert bodies(config) == ["line 0", "line 1", "line 2"]
    import query
    assert query.connect(str(config)).execute("SELECT DISTINCT namespace, pod FROM logs").fetchall() == [
        ("shop", "web-1")]
