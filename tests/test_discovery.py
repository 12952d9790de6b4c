"""shipper.discovery: which files the include globs name, bounded on symlink loops, and rotated siblings."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from shipper.discovery import excluded, match_glob, matching_paths, rotated_siblings


def touch(path: Path, text: str = "x\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_double_star_matches_as_glob_does_hidden_names_left_alone(tmp_path):
    for rel in ("a.log", "d1/b.log", "d1/d2/c.log", "d1/.hidden/e.log", ".top/f.log", "d1/.g.log", "d1/h.txt"):
        touch(tmp_path / rel)
    pattern = str(tmp_path / "**" / "*.log")
    assert sorted(match_glob(pattern)) == sorted(glob.glob(pattern, recursive=True))
    assert sorted(Path(p).relative_to(tmp_path).as_posix() for p in match_glob(pattern)) == \
        ["a.log", "d1/b.log", "d1/d2/c.log"]


def test_a_symlink_loop_is_walked_once(tmp_path):
    touch(tmp_path / "logs" / "app.log")
    os.symlink(".", tmp_path / "logs" / "self")
    os.symlink("..", tmp_path / "logs" / "up")
    found = match_glob(str(tmp_path / "logs" / "**" / "*.log"))
    assert found == [str(tmp_path / "logs" / "app.log")]   # by its real path, once


def test_a_file_reached_by_a_link_and_by_its_real_path_is_followed_once_by_its_real_path(tmp_path):
    real = touch(tmp_path / "pods" / "shop_web-1_uid" / "nginx" / "0.log")
    os.makedirs(tmp_path / "containers")
    os.symlink(real, tmp_path / "containers" / "web-1_shop_nginx-abc.log")
    include = [tmp_path / "containers" / "*.log", tmp_path / "pods" / "**" / "*.log"]
    assert matching_paths(include, []) == {str(real)}
    # with only the link's glob, the link is what is followed
    assert matching_paths([tmp_path / "containers" / "*.log"], []) == {
        str(tmp_path / "containers" / "web-1_shop_nginx-abc.log")}


def test_excluded_and_non_regular_files_are_not_followed(tmp_path):
    touch(tmp_path / "logs" / "keep.log")
    touch(tmp_path / "logs" / "skip-me.log")
    os.mkfifo(tmp_path / "logs" / "fifo.log")
    os.makedirs(tmp_path / "logs" / "dir.log")
    os.symlink(tmp_path / "nowhere", tmp_path / "logs" / "dangling.log")
    found = matching_paths([tmp_path / "logs" / "*.log"], ["*skip-*"])
    assert found == {str(tmp_path / "logs" / "keep.log")}
    assert excluded(str(tmp_path / "logs" / "skip-me.log"), ["*skip-*"])
    assert not excluded(str(tmp_path / "logs" / "keep.log"), ["*skip-*"])


def test_a_sidecar_refuses_every_path_reached_through_a_link(tmp_path):
    secret = touch(tmp_path / "secret" / "tls.key", "PRIVATE KEY\n")
    own = touch(tmp_path / "logs" / "app.log")
    os.symlink(secret, tmp_path / "logs" / "planted.log")
    os.makedirs(tmp_path / "elsewhere")
    touch(tmp_path / "elsewhere" / "other.log")
    os.symlink(tmp_path / "elsewhere", tmp_path / "logs" / "linked-dir")
    refused: set[str] = set()
    found = matching_paths([tmp_path / "logs" / "**" / "*.log"], [], refused)
    assert found == {str(own)}
    assert refused == {str(tmp_path / "logs" / "planted.log"), str(tmp_path / "logs" / "linked-dir" / "other.log")}
    # a node agent (no refused set) follows kubelet's links as before
    assert str(tmp_path / "logs" / "planted.log") in matching_paths([tmp_path / "logs" / "*.log"], [])


def test_rotated_siblings_are_the_names_rotation_tools_leave(tmp_path):
    log = touch(tmp_path / "app.log")
    for name in ("app.log.1", "app.log.2.gz", "app.log-20261201", "app.log.20261201-120000", "app.log2",
                 "other.log.1", "app.logx"):
        touch(tmp_path / name)
    assert [Path(p).name for p in rotated_siblings(str(log))] == [
        "app.log-20261201", "app.log.1", "app.log.2.gz", "app.log.20261201-120000"]


def test_rotated_siblings_of_a_name_with_glob_characters_are_its_own(tmp_path):
    log = touch(tmp_path / "a[1].log")
    touch(tmp_path / "a[1].log.1")
    touch(tmp_path / "a1.log.1")      # what an unescaped a[1].log.* would match
    assert [Path(p).name for p in rotated_siblings(str(log))] == ["a[1].log.1"]


def test_rotated_siblings_are_looked_for_beside_the_real_file(tmp_path):
    real = touch(tmp_path / "pods" / "0.log")
    touch(tmp_path / "pods" / "0.log.20261201-120000")
    os.makedirs(tmp_path / "containers")
    os.symlink(real, tmp_path / "containers" / "c.log")
    assert rotated_siblings(str(tmp_path / "containers" / "c.log")) == [str(tmp_path / "pods" / "0.log.20261201-120000")]
