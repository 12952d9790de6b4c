"""shipper.positions: the one owner of every position: queued, delivered, released, resumed, forgotten."""

from __future__ import annotations

import os

import orjson

from shipper import identity
from shipper.checkpoint import STALE_AFTER_S
from shipper.identity import Position
from shipper.positions import Positions


def marks(**by_source: int) -> dict[str, tuple[str, Position]]:
    return {sid: (f"/logs/{sid}.log", Position(offset, offset + 1)) for sid, offset in by_source.items()}


def test_a_checkpoint_moves_only_when_the_batch_is_delivered(tmp_path):
    p = Positions(tmp_path / "cp.json")
    p.queued(marks(a=100))
    assert p.checkpoints.offset("a") is None and p.known("a") is None
    p.delivered(marks(a=100))
    assert p.checkpoints.offset("a") == 100 and p.known("a") == Position(100, 101)
    p.save(set())
    assert orjson.loads((tmp_path / "cp.json").read_bytes())["sources"]["a"]["offset"] == 100


def test_known_is_the_furthest_of_released_buffered_and_checkpointed(tmp_path):
    p = Positions(tmp_path / "cp.json")
    p.delivered(marks(a=100, b=500, c=10))
    p.resume({"a": Position(300, 3), "b": Position(200, 2)})
    p.release("a", Position(250, 9))
    p.release("c", Position(400, 4))
    assert p.known("a") == Position(300, 3)      # buffered beyond what was released
    assert p.known("b") == Position(500, 501)    # checkpointed beyond the buffer
    assert p.known("c") == Position(400, 4)      # released beyond the checkpoint
    assert p.known("nobody") is None


def test_a_released_position_is_dropped_once_the_checkpoint_holds_as_much(tmp_path):
    p = Positions(tmp_path / "cp.json")
    p.release("a", Position(100, 1))
    p.save(set())
    assert p.known("a") == Position(100, 1)      # not delivered yet: still known from the release
    p.delivered(marks(a=100))
    p.save(set())
    assert p._released == {}
    assert p.known("a") == Position(100, 101)


def test_a_deleted_source_is_forgotten_only_after_its_last_batch_is_delivered(tmp_path):
    p = Positions(tmp_path / "cp.json")
    p.delivered(marks(gone=10))
    p.queued(marks(gone=20))
    p.queued(marks(gone=30))
    p.deleted("gone")
    p.save(set())
    assert p.checkpoints.offset("gone") == 10    # two batches still queued
    p.delivered(marks(gone=20))
    p.save(set())
    assert p.checkpoints.offset("gone") == 20    # one still queued
    p.delivered(marks(gone=30))
    p.save(set())
    assert p.checkpoints.offset("gone") is None
    assert "gone" not in orjson.loads((tmp_path / "cp.json").read_bytes())["sources"]


def test_a_source_with_a_queued_batch_is_not_pruned_as_stale(tmp_path):
    p = Positions(tmp_path / "cp.json")
    p.delivered(marks(slow=10, idle=20, old=30))
    for s in p.checkpoints._sources.values():
        s.seen -= STALE_AFTER_S + 10           # last seen more than a day ago
    p.queued(marks(slow=40))
    p.save({"idle"})                           # idle: closed while idle, still followed
    assert p.checkpoints.sources().keys() == {"slow", "idle"}


def test_a_version_1_position_is_taken_over_once_and_only_where_the_file_is_long_enough(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(b"first line\n" + b"x" * 100 + b"\n")
    fd = os.open(log, os.O_RDONLY)
    try:
        legacy = identity.legacy_id("node-1", fd)
        assert legacy is not None
        (tmp_path / "cp.json").write_bytes(orjson.dumps(
            {"version": 1, "sources": {legacy: {"path": str(log), "offset": 11}}}))
        p = Positions(tmp_path / "cp.json")
        assert p.created_at == 0.0 and str(log) in p.paths()
        assert p.legacy("node-1", fd) == Position(11, identity.window(fd, 11))
        assert p.legacy("node-1", fd) is None     # once
    finally:
        os.close(fd)
    (tmp_path / "cp2.json").write_bytes(orjson.dumps(
        {"version": 1, "sources": {legacy: {"path": str(log), "offset": 10_000}}}))
    fd = os.open(log, os.O_RDONLY)
    try:
        assert Positions(tmp_path / "cp2.json").legacy("node-1", fd) is None   # beyond the file's end
    finally:
        os.close(fd)


def test_a_failed_save_raises_and_the_next_save_writes(tmp_path):
    p = Positions(tmp_path / "cp.json")
    p.delivered(marks(a=5))
    (tmp_path / "cp.json").mkdir()            # the file cannot be replaced (root too): like a full disk
    try:
        p.save(set())
    except OSError:
        pass
    else:
        raise AssertionError("a save that cannot write must raise, for the agent to count and retry")
    (tmp_path / "cp.json").rmdir()
    p.save(set())
    assert orjson.loads((tmp_path / "cp.json").read_bytes())["sources"]["a"]["offset"] == 5
