"""How loglake makes a file durable; both the spool contract and every
position loglake saves depend on it: write to a temporary name in the same
directory, fsync, rename over the final name, fsync the directory. After a
crash either the old or the new content is there, never a mix.

The temporary file is created exclusively and never through a symlink
(``O_CREAT|O_EXCL|O_NOFOLLOW``): a link planted at the temporary name cannot
make loglake write into another file. A temporary name already taken (left by
a crash, or planted) is unlinked, which removes a link and never its target,
and the exclusive create is tried once more.

The directories loglake keeps its own state in must be private to it: one that
other users may write to lets them plant such names, or segments, at will.
``require_private_dir`` refuses it (ConfigError); directories loglake creates
itself are created owner-only.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path

from runtime.errors import ConfigError

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's fsync makes renames in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and any missing parent, each owner-only (0700) and durable (its parent fsynced: a
    file written durably inside must not vanish with a directory entry lost in a power cut); existing ones
    are left as they are."""
    missing = []
    p = Path(path)
    while not os.path.lexists(p):
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:  # made meanwhile by another process: it is checked where it matters
            continue
        fsync_path(d.parent)


def require_private_dir(path: Path, what: str, create: bool = True) -> None:
    """Refuse (ConfigError, one sentence) a directory other users may write to or that another user
    owns; ``create`` makes it owner-only first when it does not exist. ``what`` names it for a person,
    e.g. "spool directory"."""
    if create:
        try:
            make_private_dirs(path)
        except OSError as e:
            raise ConfigError(f"cannot create the {what} {path}: {e.strerror}; check the setting and the "
                              "permissions of its parent") from None
    try:
        st = os.stat(path)
    except OSError as e:
        raise ConfigError(f"cannot use the {what} {path}: {e.strerror}; check the setting") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"the {what} {path} is not a directory; point the setting at a directory")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise ConfigError(f"the {what} {path} is writable by other users (mode {mode:04o}), who could plant "
                          f"files in it; run 'chmod go-w {path}'")
    if st.st_uid not in (os.geteuid(), 0):
        raise ConfigError(f"the {what} {path} belongs to another user (uid {st.st_uid}); run "
                          f"'chown {os.geteuid()} {path}' or run loglake as its owner")


def _create_exclusive(tmp: Path, mode: int) -> int:
    try:
        return os.open(tmp, _CREATE, mode)
    except FileExistsError:
        # left by a crash, or planted: unlinking removes a symlink itself, never the file it names
        os.unlink(tmp)
        return os.open(tmp, _CREATE, mode)


def write_durably(path: Path, data: bytes, mode: int = 0o600) -> None:
    make_private_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = _create_exclusive(tmp, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)  # a symlink at ``path`` is replaced, not followed
    except OSError:
        # a full disk must not keep a half-written temporary file taking the room that is left; removing it
        # may fail for the same cause (a read-only remount), and the failure to report is the write's
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


_SAFE_NODE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(node: str) -> str:
    """``node`` as one path component that stays where it is put: a character other than a letter, digit,
    ``.``, ``_`` or ``-`` becomes ``_``, and a ``_`` goes in front of "", "." and ".." (the directory itself
    and its parent). Every other name keeps its form: names are the paths of existing lakes and spools."""
    name = _SAFE_NODE.sub("_", node)
    return "_" + name if name in ("", ".", "..") else name
