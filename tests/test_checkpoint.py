"""Checkpoint file: durable, versioned, pruned."""

from __future__ import annotations

import orjson
import pytest

from runtime.errors import ConfigError
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


def test_newer_version_is_one_clear_error(tmp_path):
    """A newer shipper's file is not damaged: refused (one sentence), not thrown away."""
    (tmp_path / "cp.json").write_bytes(b'{"version": 9, "sources": {}}')
    with pytest.raises(ConfigError, match="has version 9, expected 2: a newer loglake-shipper wrote it"):
        Checkpoints(tmp_path / "cp.json")
    assert (tmp_path / "cp.json").exists()


def test_version_1_file_is_taken_over(tmp_path):
    """Positions of a version-1 file (inode ids) are kept for this run, and the next save is version 2."""
    (tmp_path / "cp.json").write_bytes(orjson.dumps(
        {"version": 1, "sources": {"n:1:2:3": {"path": "/x/0.log", "offset": 5, "seen": 1}}}))
    cp = Checkpoints(tmp_path / "cp.json")
    assert cp.legacy == {"n:1:2:3": ("/x/0.log", 5)} and "/x/0.log" in cp.paths()
    assert cp.save()
    assert orjson.loads((tmp_path / "cp.json").read_bytes())["version"] == 2


def test_malformed_entries_are_skipped_the_others_kept(tmp_path, caplog):
    good = {"path": "/x/0.log", "offset": 120, "window": 77, "seen": 1795514400}
    bad = {"s-str": {**good, "offset": "120"}, "s-neg": {**good, "offset": -1}, "s-bool": {**good, "offset": True},
           "s-nowin": {"path": "/x/1.log", "offset": 5}, "s-path": {**good, "path": 7}, "s-list": [1, 2],
           "s-bigwin": {**good, "window": 1 << 32}}
    (tmp_path / "cp.json").write_bytes(orjson.dumps(
        {"version": 2, "created_at": 1795514400, "sources": {"ok": good, "ok-noseen": {**good, "seen": "x"}, **bad}}))
    with caplog.at_level("WARNING", "loglake.shipper"):
        cp = Checkpoints(tmp_path / "cp.json")
    assert set(cp.sources()) == {"ok", "ok-noseen"} and cp.position("ok") == Position(120, 77)
    assert cp.created_at == 1795514400
    skipped = {r.source_id for r in caplog.records if r.getMessage().startswith("checkpoint entry skipped")}
    assert skipped == set(bad)
    assert cp.save()   # written back without them
    assert set(orjson.loads((tmp_path / "cp.json").read_bytes())["sources"]) == {"ok", "ok-noseen"}


def test_an_unparseable_file_is_moved_aside_and_history_restarts_unknown(tmp_path, caplog):
    (tmp_path / "cp.json").write_bytes(b'{"version": 2, "sources": {"a": {"pa')
    with caplog.at_level("WARNING", "loglake.shipper"):
        cp = Checkpoints(tmp_path / "cp.json")
    assert cp.sources() == {} and cp.created_at == 0.0   # rotated files of the last day are read, not skipped
    assert [p.read_bytes() for p in tmp_path.glob("cp.json.corrupt-*")] == [b'{"version": 2, "sources": {"a": {"pa']
    assert any("moved aside" in r.getMessage() for r in caplog.records)
