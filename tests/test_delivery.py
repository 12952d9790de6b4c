"""Delivery when the transport fails: disk buffer, order, checkpoints, backpressure."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from runtime.errors import AccessDeniedError, BatchRefusedError, TransportError
from schemas import wire
from shipper.batch import Outgoing, Progress
from shipper.buffer import DiskBuffer, SetAside
from shipper.positions import Positions
from shipper.delivery import Delivery
from shipper.identity import Position


class FlakyTransport:
    """Acknowledges while ``up``; otherwise fails each send."""

    name = "fake"

    def __init__(self) -> None:
        self.up = True
        self.delivered: list[bytes] = []
        self.resets = 0

    async def reset(self) -> None:
        self.resets += 1

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        if not self.up:
            raise TransportError("broker unreachable")
        self.delivered.append(value)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


def batch(i: int) -> Outgoing:
    return Outgoing(b"k", 0.0, [wire.Run(b'{"source_id":"src"}', f'{{"n":{i}}}\n'.encode(), 1)], 8, 1,
                 {"src": Progress("/p", Position((i + 1) * 100, i), b'{"source_id":"src","source_path":"/p"}')})


def delivered_numbers(t: FlakyTransport) -> list[int]:
    return [orjson.loads(wire.decode(v).body.splitlines()[1])["n"] for v in t.delivered]


def make(tmp_path, transport, max_bytes=10**9) -> Delivery:
    return Delivery(transport, Positions(tmp_path / "cp.json"), DiskBuffer(tmp_path / "buf", max_bytes),
                    SetAside(tmp_path / "refused", "n"), node="n", zstd_level=1, max_inflight=8, ack_timeout_s=5)


def test_outage_buffers_on_disk_and_replays_in_order(tmp_path):
    async def go():
        t = FlakyTransport()
        d = make(tmp_path, t)
        await d.send([batch(0)])
        assert d.positions.checkpoints.offset("src") == 100
        t.up = False
        await d.send([batch(1), batch(2)])
        assert d.backlog and d.buffer.bytes > 0
        assert len(list((tmp_path / "buf").glob("*.buf"))) == 2
        assert d.positions.checkpoints.offset("src") == 100           # not acknowledged: the checkpoint stays
        t.up = True
        await d.send([batch(3)])                            # goes behind the buffered ones
        assert await d.drain(deadline=None)
        assert delivered_numbers(t) == [0, 1, 2, 3]
        assert t.resets == 1                                 # a fresh producer before the replay
        assert d.positions.checkpoints.offset("src") == 400
        assert not list((tmp_path / "buf").glob("*.buf")) and d.buffer.bytes == 0
    asyncio.run(go())


def test_buffer_survives_a_restart(tmp_path):
    async def go():
        t = FlakyTransport()
        t.up = False
        d = make(tmp_path, t)
        await d.send([batch(0), batch(1)])
        d.positions.checkpoints.save()
        # a new process: the buffered batches come back in order, with the read position they cover
        t2 = FlakyTransport()
        d2 = make(tmp_path, t2)
        assert d2.buffered_marks() == {"src": Position(200, 1)}
        assert d2.positions.checkpoints.offset("src") is None
        assert await d2.drain(deadline=None)
        assert delivered_numbers(t2) == [0, 1]
        assert d2.positions.checkpoints.offset("src") == 200
    asyncio.run(go())


def test_unacknowledged_batches_time_out_into_the_buffer(tmp_path):
    class Silent(FlakyTransport):
        async def send(self, key, value):
            if not self.up:
                return asyncio.get_running_loop().create_future()   # never completes
            return await super().send(key, value)

    async def go():
        t = Silent()
        t.up = False
        d = make(tmp_path, t)
        d.ack_timeout_s = 0.05
        await d.send([batch(0)])
        await asyncio.sleep(0.1)
        await d.settle()
        assert d.backlog and d.stats["send_failures"] == 1
        t.up = True
        assert await d.drain(deadline=None)
        assert delivered_numbers(t) == [0]
    asyncio.run(go())


def test_full_buffer_is_reported(tmp_path):
    async def go():
        t = FlakyTransport()
        t.up = False
        d = make(tmp_path, t, max_bytes=200)
        await d.send([batch(i) for i in range(5)])
        assert d.buffer.full
    asyncio.run(go())


@pytest.mark.parametrize("grace_s", [0.2])
def test_park_keeps_inflight_batches_on_disk(tmp_path, grace_s):
    class Hanging(FlakyTransport):
        async def send(self, key, value):
            return asyncio.get_running_loop().create_future()

    async def go():
        d = make(tmp_path, Hanging())
        await d.send([batch(0)])
        assert not await d.drain(deadline=time.monotonic() + grace_s)
        d.park()
        assert len(list((tmp_path / "buf").glob("*.buf"))) == 1
    asyncio.run(go())


class RefusingTransport(FlakyTransport):
    """Refuses the batches whose number is in ``refuse`` with ``error`` (raised at send or in the answer)."""

    def __init__(self, refuse: set[int], error: type[TransportError], in_answer: bool) -> None:
        super().__init__()
        self.refuse, self.error, self.in_answer, self.attempts = refuse, error, in_answer, 0

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        self.attempts += 1
        n = orjson.loads(wire.decode(value).body.splitlines()[1])["n"]
        if n not in self.refuse:
            return await super().send(key, value)
        if not self.in_answer:
            raise self.error(f"refused {n}")
        fut = asyncio.get_running_loop().create_future()
        fut.set_exception(self.error(f"refused {n}"))
        return fut


@pytest.mark.parametrize("in_answer", [False, True], ids=["at-send", "in-answer"])
def test_a_batch_refused_for_good_is_set_aside_and_the_rest_goes_on(tmp_path, in_answer):
    async def go():
        t = RefusingTransport({1}, BatchRefusedError, in_answer)
        d = make(tmp_path, t)
        await d.send([batch(0), batch(1), batch(2)])
        assert await d.drain(time.monotonic() + 5)
        assert delivered_numbers(t) == [0, 2]
        assert t.attempts == 3                                   # tried once: never retried
        assert d.positions.checkpoints.offset("src") == 300      # its marks delivered in its place
        assert d.stats["batches_refused"] == 1 and d.stats["records_refused"] == 1 and not d.backlog
        kept = sorted((tmp_path / "refused" / "n").iterdir())
        assert [k.name for k in kept] == ["00000000000000000000.batch"]
        assert orjson.loads(wire.decode(kept[0].read_bytes()).body.splitlines()[1]) == {"n": 1}
    asyncio.run(go())


def test_a_batch_that_cannot_be_set_aside_is_kept_and_retried(tmp_path):
    async def go():
        t = RefusingTransport({0}, BatchRefusedError, False)
        d = make(tmp_path, t)
        (tmp_path / "refused").write_text("not a directory")     # setting aside fails (like a full disk)
        await d.send([batch(0)])
        await d.settle()
        assert d.backlog and d.positions.checkpoints.offset("src") is None and d.stats["batches_refused"] == 0
        (tmp_path / "refused").unlink()
        d._retry_at = 0.0
        assert await d.drain(time.monotonic() + 5)
        assert d.stats["batches_refused"] == 1 and d.positions.checkpoints.offset("src") == 100
    asyncio.run(go())


@pytest.mark.parametrize("in_answer", [False, True], ids=["at-send", "in-answer"])
def test_denied_access_stops_delivery_and_keeps_the_batches(tmp_path, in_answer):
    async def go():
        t = RefusingTransport({0, 1}, AccessDeniedError, in_answer)
        d = make(tmp_path, t)
        await d.send([batch(0), batch(1)])
        await d.settle()
        assert isinstance(d.denied, AccessDeniedError) and str(d.denied) in ("refused 0", "refused 1")
        assert d.positions.checkpoints.offset("src") is None     # nothing delivered, nothing skipped
        assert len(list((tmp_path / "buf").glob("*.buf"))) == 2  # kept for the next start
        assert not (tmp_path / "refused").exists()
    asyncio.run(go())


def test_an_outage_is_retried_not_set_aside(tmp_path):
    async def go():
        t = FlakyTransport()
        t.up = False
        d = make(tmp_path, t)
        await d.send([batch(0)])
        assert d.backlog and d.denied is None and d.stats["batches_refused"] == 0
        t.up = True
        d._retry_at = 0.0
        assert await d.drain(time.monotonic() + 5)
        assert delivered_numbers(t) == [0] and not (tmp_path / "refused").exists()
    asyncio.run(go())



# --- through the agent and the lake: a restart after an outage replays in the order lines were read ---------

class AnsweringLater:
    """Kafka as the shipper sees it: each key's answers come in order, 1-30 ms apart (one partition, one
    request at a time); after ``fail_after`` sends every answer is ``error`` (or, ``silent``, none at all).
    What was accepted is kept, in order, as files (a fork's sends survive it)."""

    name = "fake-kafka"

    def __init__(self, kept: Path, fail_after: int | None, error: type[TransportError] = TransportError,
                 silent: bool = False, seed: int = 1) -> None:
        import random
        self.kept, self.fail_after, self.error, self.silent = kept, fail_after, error, silent
        self.n, self.due, self.rng = 0, {}, random.Random(seed)
        kept.mkdir(exist_ok=True)

    async def start(self) -> None: ...
    async def reset(self) -> None: ...
    async def close(self) -> None: ...

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.n += 1
        down = self.fail_after is not None and self.n > self.fail_after
        if not down:
            (self.kept / f"{len(list(self.kept.iterdir())):06d}").write_bytes(value)
        if down and self.silent and self.n > self.fail_after + 1:
            return fut   # no answer: the ack timeout decides
        self.due[key] = max(self.due.get(key, 0.0), loop.time()) + self.rng.uniform(0.001, 0.03)
        loop.call_at(self.due[key], lambda: fut.done() or (fut.set_exception(self.error("broker gone")) if down
                                                            else fut.set_result(None)))
        return fut


def _store(config: Path, kept: Path) -> dict[str, int]:
    """What reached 'Kafka', consumed by the real aggregator in order; the lake's lines with their counts."""
    import query
    from aggregator.cli import run
    from aggregator.source.base import Message

    class Topic:
        topic, on_revoke = "logs", None

        def __init__(self) -> None:
            self.values, self.done, self.pos = [p.read_bytes() for p in sorted(kept.iterdir())], False, 0

        async def start(self, positions):
            self.pos = positions().get("0", 0)

        async def poll(self, timeout):
            if self.done:
                return []
            self.done = True
            return [Message("0", i, v) for i, v in enumerate(self.values) if i >= self.pos]

        def caught_up(self): return self.done
        def lag(self): return {}
        def unavailable(self): return None
        async def commit(self, p, o): ...
        async def close(self): ...

    saved, run._source = run._source, lambda settings: Topic()
    try:
        assert run.main(["--config", str(config), "--once", "--log-level", "ERROR"]) == 0
        assert run.main(["--config", str(config), "verify", "--log-level", "ERROR"]) == 0
    finally:
        run._source = saved
    return dict(query.connect(str(config)).execute("SELECT body, count(*) FROM logs GROUP BY body").fetchall())


@pytest.mark.parametrize("how", ["outage-then-sigterm", "denied-then-restart", "outage-then-kill-9"])
def test_a_restart_after_an_outage_loses_and_repeats_nothing(tmp_path, capsys, how):
    """Batches reach the disk buffer in the order their failures are answered, not the order they were read;
    a restart must still deliver each container's lines in order (the lake drops a record behind one it
    already has from the same source), and resuming after the buffer's marks must skip no batch that was in
    flight when the process died."""
    import os
    from runtime.errors import AccessDeniedError
    from shipper import config as shipper_config
    from shipper.agent import Agent
    from tests.conftest import cri, pod_log, write_config

    config = write_config(tmp_path, shipper={"batch_max_bytes": 2048, "shutdown_grace_ms": 300,
                                             "ack_timeout_ms": 500})
    expected = []
    for j in range(3):
        text = [f"c{j} line {i} " + "x" * 40 for i in range(300)]
        pod_log(tmp_path, "shop", f"web-{j}", "app").write_text(
            "".join(cri(f"2026-11-24T10:00:00.{i:09d}Z", t) for i, t in enumerate(text)))
        expected += text
    kept = tmp_path / "kafka"
    settings = shipper_config.load(str(config))
    if how == "outage-then-sigterm":
        async def first() -> None:
            agent = Agent(settings, AnsweringLater(kept, 5))
            asyncio.get_running_loop().call_later(1.5, agent.stop)
            await agent.run()
        asyncio.run(first())
    elif how == "denied-then-restart":
        with pytest.raises(AccessDeniedError):
            asyncio.run(Agent(settings, AnsweringLater(kept, 5, AccessDeniedError)).run())
    else:
        pid = os.fork()
        if pid == 0:   # the child is killed (no shutdown, no last save) during the outage
            async def first() -> None:
                asyncio.get_running_loop().call_later(0.6, lambda: os._exit(9))
                await Agent(settings, AnsweringLater(kept, 5, silent=True)).run()
            asyncio.run(first())
            os._exit(0)
        os.waitpid(pid, 0)
    assert list((tmp_path / "shipper" / "buffer").glob("*.buf")), "the outage left batches in the disk buffer"
    asyncio.run(Agent(shipper_config.load(str(config)), AnsweringLater(kept, None)).run(once=True))
    got = _store(config, kept)
    assert [b for b in expected if b not in got] == []
    assert {b: n for b, n in got.items() if n > 1} == {}
