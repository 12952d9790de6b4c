"""shipper.followed on its own: which files are followed, and where each goes on rotation, copytruncate,
idleness and a full descriptor budget (no reading, no records: the agent's part)."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest

from shipper import config as shipper_config
from shipper import identity
from shipper.checkpoint import prepare_state_dir
from shipper.files import TailedFile
from shipper.followed import FollowedFiles
from shipper.positions import Positions
from tests.conftest import cri, pod_log, record_builder, write_config

LINE = cri("2026-11-24T10:00:00.000000000Z", "first line of the file")


def followed(tmp: Path, **shipper: object) -> FollowedFiles:
    cfg = shipper_config.load(str(write_config(tmp, shipper=shipper))).shipper
    prepare_state_dir(cfg.data_dir)
    return FollowedFiles(cfg, Positions(cfg.data_dir / "checkpoints.json"), 16_384, Counter(), Counter())


def log_file(tmp: Path, pod: str = "web-1", text: str = LINE) -> Path:
    path = pod_log(tmp, "shop", pod, "app")
    path.write_text(text)
    return path


def identified(src: TailedFile, at_eof: bool = True) -> TailedFile:
    """What the agent makes of a source once its first line is read (enough for followed's checks)."""
    src.fp = identity.fingerprint(src.tail.fd, src.directory)
    src.source_id = identity.source_id("node-a", src.fp or "")
    src.builder = record_builder("cri")[0]
    src.tail.offset, src.at_eof = src.tail.size(), at_eof
    return src


def test_a_new_file_is_followed_at_its_path_once(tmp_path: Path) -> None:
    path = log_file(tmp_path)
    files = followed(tmp_path)
    files.look()
    files.look()
    assert list(files.active) == [str(path)] and files.retired == []
    assert files.held() == 1 and files.stats["files_opened"] == 1


def test_a_renamed_file_is_retired_and_not_followed_twice(tmp_path: Path) -> None:
    path = log_file(tmp_path)
    files = followed(tmp_path)
    files.look()
    src = identified(files.active[str(path)])
    os.rename(path, f"{path}.1")
    path.write_text(cri("2026-11-24T10:00:01.000000000Z", "after rotation"))
    files.look()
    assert files.retired == [src] and src.gone_since is not None
    assert files.active[str(path)] is not src and files.stats["rotations"] == 1
    # the rotated name is beside the path, but it is the file already open: not opened again
    assert files.held() == 2 and files.stats["files_opened"] == 2


def test_a_deleted_file_stays_open_until_finished(tmp_path: Path) -> None:
    path = log_file(tmp_path)
    files = followed(tmp_path)
    files.look()
    src = identified(files.active[str(path)])
    path.unlink()
    files.look()
    assert files.active == {} and files.retired == [src]
    finished: list[TailedFile] = []

    def done(s: TailedFile) -> bool:
        finished.append(s)
        return True

    files.finish(done, time.monotonic(), 3600.0)
    assert finished == [] and files.retired == [src], "finished before rotate_wait"
    files.finish(done, time.monotonic(), 0.0)
    assert finished == [src] and files.retired == []


def test_finishing_waits_for_a_file_read_to_its_end(tmp_path: Path) -> None:
    path = log_file(tmp_path)
    files = followed(tmp_path)
    files.look()
    src = identified(files.active[str(path)], at_eof=False)
    path.unlink()
    files.look()
    files.finish(lambda s: True, time.monotonic() + 10, 0.0)
    assert files.retired == [src]
    files.finish(lambda s: False, time.monotonic() + 10, 0.0)   # lines came meanwhile: it stays
    src.at_eof = True
    files.finish(lambda s: False, time.monotonic() + 10, 0.0)
    assert files.retired == [src]


def test_copytruncate_detaches_the_content_and_follows_the_new_one(tmp_path: Path) -> None:
    path = log_file(tmp_path)
    files = followed(tmp_path)
    files.look()
    src = identified(files.active[str(path)])
    path.write_text(cri("2026-11-24T10:00:02.000000000Z", "new"))   # truncated in place, new first line
    files.look()
    fresh = files.active[str(path)]
    assert fresh is not src and (fresh.dev, fresh.ino) == (src.dev, src.ino) and fresh.tail.offset == 0
    assert src.detached and src in files.retired and files.stats["truncations"] == 1


def test_the_owner_of_a_content_is_found_and_checked(tmp_path: Path) -> None:
    path = log_file(tmp_path)
    files = followed(tmp_path)
    files.look()
    src = identified(files.active[str(path)])
    second = log_file(tmp_path, "web-2", LINE.replace("first", "another"))
    files.look()
    other = identified(files.active[str(second)])
    assert other.source_id != src.source_id
    assert src.source_id is not None and files.owner(src.source_id, other) is src
    assert files.owner(src.source_id, src) is None
    path.write_text("")   # emptied since: the owner is found truncated on the way
    assert files.owner(src.source_id, other) is src and src.detached


def test_an_idle_file_is_closed_and_opened_again_when_it_changes(tmp_path: Path) -> None:
    path = log_file(tmp_path)
    files = followed(tmp_path, close_idle_after_ms=1)
    files.look()
    src = identified(files.active[str(path)])
    src.read_at = time.monotonic() - 1
    files.look()
    assert files.active == {} and str(path) in files.idle and files.stats["files_idle_closed"] == 1
    assert src.source_id in files.source_ids(), "a closed file's checkpoint entry must stay"
    files.look()
    assert files.active == {}, "unchanged: stays closed"
    with path.open("a") as f:
        f.write(cri("2026-11-24T10:00:03.000000000Z", "more"))
    files.look()
    assert files.active[str(path)].reopened and str(path) not in files.idle


def test_an_idle_file_with_an_unread_line_is_not_closed(tmp_path: Path) -> None:
    path = log_file(tmp_path)
    files = followed(tmp_path, close_idle_after_ms=1)
    files.look()
    src = identified(files.active[str(path)])
    with path.open("a") as f:
        f.write(cri("2026-11-24T10:00:03.000000000Z", "unread"))
    src.read_at = time.monotonic() - 1
    files.look()
    assert files.active == {str(path): src} and files.idle == {}


def test_a_file_waits_for_a_descriptor_and_gets_the_least_recent_one(tmp_path: Path) -> None:
    first = log_file(tmp_path, "web-1")
    files = followed(tmp_path, max_open_files=1)
    files.look()
    second = log_file(tmp_path, "web-2")
    src = identified(files.active[str(first)], at_eof=False)
    files.look()
    assert list(files.active) == [str(first)] and list(files.slots.waiting) == [str(second)]
    assert not files.all_waiting_served and files.errors["open_files_limit"] == 1
    src.at_eof = True   # read to its end: its descriptor may go to the file waiting
    files.look()
    assert list(files.active) == [str(second)] and str(first) in files.idle and files.all_waiting_served


def test_a_rotated_sibling_found_at_start_is_read_but_not_a_fifo_link_or_archive(tmp_path: Path) -> None:
    path = log_file(tmp_path)
    rotated = Path(f"{path}.1")
    rotated.write_text(LINE.replace("first", "rotated"))
    os.mkfifo(f"{path}.2")
    os.symlink("/etc/passwd", f"{path}.3")
    Path(f"{path}.4.gz").write_bytes(b"\x1f\x8b")
    files = followed(tmp_path)
    files.look()
    assert [s.path for s in files.retired] == [str(rotated)]
    after = files.retired[0].adopt_after
    assert after is not None and 0 < after <= files.positions.stale_before, "no position: read if written since"


def test_a_file_renamed_while_closed_is_owed_a_read(tmp_path: Path) -> None:
    path = log_file(tmp_path)
    files = followed(tmp_path, close_idle_after_ms=1)
    files.look()
    identified(files.active[str(path)]).read_at = time.monotonic() - 1
    files.look()
    assert str(path) in files.idle
    os.rename(path, f"{path}.1")
    files.look()
    adopted = files.retired
    assert [s.path for s in adopted] == [f"{path}.1"] and files.owed(adopted[0])
    assert adopted[0].adopt_after == 0.0, "owed: read whatever its age"
    files.paid(adopted[0])
    assert not files.owed(adopted[0])


@pytest.mark.parametrize("name", ["0.log.1.gz", "0.log.2.zst"])
def test_compressed_rotations_are_not_read(tmp_path: Path, name: str) -> None:
    path = log_file(tmp_path)
    (path.parent / name).write_bytes(b"\x00" * 64)
    files = followed(tmp_path)
    files.look()
    assert files.retired == []
