"""aggregator.quarantine.Quarantine: a batch that cannot be stored is kept as
``<root>/<topic>/<partition>/<offset>.<reason>.batch`` with a ``.json`` note beside it, written durably,
under safe names that stay inside the root whatever the transport calls its topic or partition."""

from __future__ import annotations

import errno
import itertools
import os
import re
import stat
import time
from pathlib import Path

import orjson
import pytest

from aggregator.quarantine import Quarantine, Unreadable
from runtime.durable import safe_name


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def note_of(batch: Path) -> dict:
    return orjson.loads(batch.with_suffix(".json").read_bytes())


def test_a_batch_and_its_note_are_kept_under_topic_partition_and_offset(tmp_path):
    q = Quarantine(tmp_path / "quarantine")
    before = time.time_ns()
    path = q.put("spool", "node-a", 42, b"LLKB\x00garbage", "bad_crc", "checksum mismatch: the batch is damaged")
    root = tmp_path / "quarantine"
    assert path == root / "spool" / "node-a" / "00000000000000000042.bad_crc.batch"
    assert path.read_bytes() == b"LLKB\x00garbage"
    note = note_of(path)
    assert note.pop("quarantined_at") in range(before, time.time_ns() + 1)
    assert note == {"topic": "spool", "partition": "node-a", "offset": 42, "reason": "bad_crc",
                    "message": "checksum mismatch: the batch is damaged", "bytes": 12}
    assert files_under(root) == ["spool/node-a/00000000000000000042.bad_crc.batch",
                                 "spool/node-a/00000000000000000042.bad_crc.json"]
    assert q.count == 1


def test_offsets_are_zero_padded_so_names_sort_by_offset(tmp_path):
    q = Quarantine(tmp_path)
    for offset in (10, 9, 100, 0, 2**63 - 1):
        q.put("t", "0", offset, b"x", "bad_magic", "m")
    names = sorted(p.name for p in (tmp_path / "t" / "0").glob("*.batch"))
    assert [int(n.split(".")[0]) for n in names] == [0, 9, 10, 100, 2**63 - 1]
    assert all(len(n.split(".")[0]) >= 20 for n in names)
    assert q.count == 5


def test_files_are_written_durably_and_owner_only(tmp_path):
    root = tmp_path / "quarantine"
    path = Quarantine(root).put("t", "3", 7, b"payload", "zstd_error", "cannot decompress")
    for p in (path, path.with_suffix(".json")):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    for d in (root, root / "t", root / "t" / "3"):
        assert stat.S_IMODE(d.stat().st_mode) & 0o077 == 0
    # no temporary name left behind
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("topic,partition", [
    ("../x", "0"), ("t", "../../x"), ("a/../../b", "/etc/cron.d"), ("t\x00", "p\nq"), ("", ""),
])
def test_hostile_topic_and_partition_names_stay_inside_the_root(tmp_path, topic, partition):
    root = tmp_path / "lake" / "quarantine"
    path = Quarantine(root).put(topic, partition, 1, b"v", "bad_magic", "m")
    assert path.resolve().is_relative_to(root.resolve())
    assert path.parent.parent.parent == root                     # exactly two levels: topic, partition
    assert files_under(tmp_path) == sorted(f"lake/quarantine/{p}" for p in files_under(root))
    note = note_of(path)
    assert (note["topic"], note["partition"]) == (topic, partition)   # the note keeps the names as given


@pytest.mark.parametrize("topic,partition", [("..", "0"), ("t", ".."), ("..", "..")])
def test_dot_dot_names_stay_inside_the_root(tmp_path, topic, partition):
    root = tmp_path / "lake" / "quarantine"
    path = Quarantine(root).put(topic, partition, 1, b"v", "bad_magic", "m").resolve()
    assert path.is_relative_to(root.resolve()), path
    assert path.parent.parent.parent == root.resolve(), path   # in a topic and a partition directory


def test_safe_name_never_names_a_directory_itself_or_its_parent_and_keeps_every_safe_name():
    """The names are paths of existing lakes, buffers and spools: only "", "." and ".." change."""
    alphabet = [".", "/", "_", "-", "a", "0", "\x00", "é"]
    for n in range(5):
        for chars in itertools.product(alphabet, repeat=n):
            name = "".join(chars)
            out = safe_name(name)
            assert out not in ("", ".", "..") and re.fullmatch(r"[A-Za-z0-9._-]+", out), (name, out)
            if name not in ("", ".", "..") and re.fullmatch(r"[A-Za-z0-9._-]+", name):
                assert out == name
    kept = ["orders", "logs.v2", "__consumer_offsets", "0", "17", "node-1.example", "...", ".hidden", "_.."]
    assert [safe_name(n) for n in kept] == kept
    assert [safe_name(n) for n in ("", ".", "..", "../x", "a/b")] == ["_", "_.", "_..", ".._x", "a_b"]


def test_a_failing_cleanup_does_not_hide_the_write_failure(tmp_path, monkeypatch):
    """write_durably removes its temporary file after a failure; when that fails too (a read-only remount),
    the write's own failure is the one raised."""
    def rename(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    def unlink(self, missing_ok=False):
        raise OSError(errno.EROFS, "Read-only file system")
    q = Quarantine(tmp_path)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(OSError) as e:
        q.put("t", "0", 1, b"v", "bad_magic", "m")
    assert e.value.errno == errno.EIO and e.value.__context__ is None
    assert q.count == 0


def test_a_hostile_reason_stays_in_the_file_name(tmp_path):
    path = Quarantine(tmp_path).put("t", "0", 5, b"v", "../../../evil", "m")
    assert path.parent == tmp_path / "t" / "0"
    assert path.name == "00000000000000000005..._.._.._evil.batch"
    assert note_of(path)["reason"] == "../../../evil"


def test_the_same_offset_again_replaces_its_files_and_another_reason_keeps_both(tmp_path):
    """A batch quarantined again after a crash before its position was committed: the same files."""
    q = Quarantine(tmp_path)
    q.put("t", "0", 8, b"first", "bad_crc", "one")
    again = q.put("t", "0", 8, b"second", "bad_crc", "two")
    assert again.read_bytes() == b"second" and note_of(again)["message"] == "two"
    other = q.put("t", "0", 8, b"third", "too_large", "three")
    assert files_under(tmp_path) == ["t/0/00000000000000000008.bad_crc.batch", "t/0/00000000000000000008.bad_crc.json",
                                     "t/0/00000000000000000008.too_large.batch",
                                     "t/0/00000000000000000008.too_large.json"]
    assert other.read_bytes() == b"third" and again.read_bytes() == b"second"
    assert q.count == 3   # every put is counted


def test_a_link_planted_at_either_name_is_replaced_never_written_through(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    root = tmp_path / "quarantine"
    d = root / "t" / "0"
    d.mkdir(parents=True, mode=0o700)
    base = "00000000000000000003.bad_magic"
    for name in (f"{base}.batch", f"{base}.json", f".{base}.batch.tmp", f".{base}.json.tmp"):
        (d / name).symlink_to(victim)
    path = Quarantine(root).put("t", "0", 3, b"hostile bytes", "bad_magic", "m")
    assert victim.read_bytes() == b"precious\n"
    assert not path.is_symlink() and path.read_bytes() == b"hostile bytes"
    assert not path.with_suffix(".json").is_symlink()
    assert sorted(p.name for p in d.iterdir()) == [f"{base}.batch", f"{base}.json"]


def test_an_unreadable_entry_is_kept_with_its_reason_and_note(tmp_path):
    value = Unreadable(b"", "not_a_file", "spool segment /s/a/1.batch is a FIFO, not a regular file, so it is "
                                          "not a batch; moved to /s/a/.1.batch.not_a_file")
    assert value == b"" and value.reason == "not_a_file"
    path = Quarantine(tmp_path).put("spool", "a", 1, value, value.reason, value.note)
    assert path.name == "00000000000000000001.not_a_file.batch" and path.read_bytes() == b""
    note = note_of(path)
    assert (note["bytes"], note["reason"], note["message"]) == (0, "not_a_file", value.note)


def test_a_write_failure_is_an_oserror_and_counts_nothing(tmp_path):
    blocker = tmp_path / "quarantine"
    blocker.write_bytes(b"a file where the quarantine directory should be\n")
    q = Quarantine(blocker)
    with pytest.raises(OSError):
        q.put("t", "0", 1, b"v", "bad_magic", "m")
    assert q.count == 0 and blocker.read_bytes().startswith(b"a file")
    assert os.listdir(tmp_path) == ["quarantine"]


def test_directories_made_for_a_durable_write_are_durable_too(tmp_path, monkeypatch):
    """Every directory write_durably creates has its parent fsynced, so a power cut cannot lose the entry of
    a directory holding a file already reported as written (a quarantined or refused batch)."""
    from runtime import durable
    synced: list[Path] = []
    real = durable.fsync_path
    monkeypatch.setattr(durable, "fsync_path", lambda p: (synced.append(Path(p)), real(p)))
    durable.write_durably(tmp_path / "a" / "b" / "x.batch", b"data")
    assert synced == [tmp_path, tmp_path / "a", tmp_path / "a" / "b"]
    synced.clear()
    durable.write_durably(tmp_path / "a" / "b" / "y.batch", b"data")   # nothing new to make: the file's dir only
    assert synced == [tmp_path / "a" / "b"]
