"""Checkpoint file: durable, versioned, pruned."""

from __future__ import annotations

import orjson
import pytest

from schemas.errors import ConfigError
from shipper.checkpoint import STALE_AFTER_S, Checkpoints
from shipper.identity import Position


def test_round_trip_and_atomic_replace(tmp_path):
    cp = Checkpoints(tmp_path / "cp.json")
    cp.advance("a", "/x/0.log", Position(120, 77))
    assert cp.save() and not cp.save()            # nothing new: no write
    again = Checkpoints(tmp_path / "cp.json")
    assert again.position("a") == Position(120, 77) and again.sources() == {"a": ("/x/0.log", 120)}
    assert again.created_at == int(cp.created_at)
    assert not list(tmp_path.glob(".*.tmp"))      # the temporary file was renamed away


def test_stale_entries_are_pruned_open_ones_kept(tmp_path):
    cp = Checkpoints(tmp_path / "cp.json")
    cp.advance("rotated", "/x/0.log", Position(10, 1))
    cp.advance("open", "/x/1.log", Position(20, 2))
    later = cp._sources["rotated"].seen + STALE_AFTER_S + 1
    cp.prune({"open"}, now=later)
    assert cp.offset("rotated") is None and cp.offset("open") == 20
    cp.save()
    assert set(orjson.loads((tmp_path / "cp.json").read_bytes())["sources"]) == {"open"}


@pytest.mark.parametrize("content, message", [(b"{not json", "is corrupt"),
                                              (b'{"version": 9, "sources": {}}', "has version 9")])
def test_bad_file_is_one_clear_error(tmp_path, content, message):
    (tmp_path / "cp.json").write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        Checkpoints(tmp_path / "cp.json")


def test_version_1_file_is_taken_over(tmp_path):
    """Positions of a version-1 file (inode ids) are kept for this run, and the next save is version 2."""
    (tmp_path / "cp.json").write_bytes(orjson.dumps(
        {"version": 1, "sources": {"n:1:2:3": {"path": "/x/0.log", "offset": 5, "seen": 1}}}))
    cp = Checkpoints(tmp_path / "cp.json")
    assert cp.legacy == {"n:1:2:3": ("/x/0.log", 5)} and "/x/0.log" in cp.paths()
    assert cp.save()
    assert orjson.loads((tmp_path / "cp.json").read_bytes())["version"] == 2
