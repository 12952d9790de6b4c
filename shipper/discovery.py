"""Finding the files the ``include`` globs name (bounded even when the tree has symlink loops), and the
rotated files beside them.

``glob.glob(recursive=True)`` follows directory symlinks under ``**`` without end (``ln -s . a``
spins a CPU and never lets SIGTERM in). Here every directory (by device and inode) is listed once:
real directories before symlinked ones, so a file is named by its real path.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import stat
from collections.abc import Iterable
from pathlib import Path


def _name_matches(part: str, name: str) -> bool:
    """One path component against one glob component; as glob does, ``*`` leaves hidden names alone."""
    if name.startswith(".") and not part.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, part)


def _parts_match(pattern: tuple[str, ...], names: tuple[str, ...]) -> bool:
    if not pattern:
        return not names
    if pattern[0] == "**":   # zero or more directories, none of them hidden
        return _parts_match(pattern[1:], names) or bool(
            names and not names[0].startswith(".") and _parts_match(pattern, names[1:]))
    return bool(names) and _name_matches(pattern[0], names[0]) and _parts_match(pattern[1:], names[1:])


def _walk(base: str) -> list[tuple[str, ...]]:
    """Every non-directory under ``base``, as path components relative to it. Directory symlinks are
    followed, but each directory (by device and inode) is listed once, so a symlink loop (``ln -s . a``,
    ``ln -s .. b``) is not walked round and round: the walk is bounded by the number of real directories.
    Real directories are listed before symlinked ones, so a file is named by its real path when both lead
    to it."""
    found: list[tuple[str, ...]] = []
    visited: set[tuple[int, int]] = set()
    real: list[tuple[str, ...]] = [()]
    linked: list[tuple[str, ...]] = []
    while real or linked:
        rel = real.pop() if real else linked.pop(0)
        d = os.path.join(base, *rel) if rel else base
        try:
            st = os.stat(d)
            if (st.st_dev, st.st_ino) in visited:
                continue
            visited.add((st.st_dev, st.st_ino))
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            try:
                is_dir = e.is_dir()
                (linked if e.is_symlink() else real).append(rel + (e.name,)) if is_dir else found.append(rel + (e.name,))
            except OSError:
                continue
    return found


def match_glob(pattern: str) -> list[str]:
    """Paths matching ``pattern``, as ``glob.glob(pattern, recursive=True)`` gives them, except that
    ``**`` does not follow directory symlinks round a loop (see _walk)."""
    parts = pattern.split("/")
    if "**" not in parts:
        return glob.glob(pattern)
    i = parts.index("**")
    prefix = "/".join(parts[:i]) or ("/" if pattern.startswith("/") else "")
    rest = tuple(p for p in parts[i:] if p)
    if not prefix:
        bases = ["."]
    elif glob.has_magic(prefix):
        bases = glob.glob(prefix)
    else:
        bases = [prefix]
    out = []
    for base in bases:
        for rel in _walk(base):
            if _parts_match(rest, rel):
                out.append(os.path.join(*rel) if not prefix else os.path.join(base, *rel))
    return out




def excluded(path: str, exclude: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(path, ex) for ex in exclude)


def matching_paths(include: Iterable[Path], exclude: Iterable[str], refused: set[str] | None = None) -> set[str]:
    """Included regular files, each once: /var/log/containers/*.log symlinks and the /var/log/pods files
    they point to are one file, tailed under its real path when the globs match both. With ``refused``
    (a sidecar), a path reached through a symlink is put there instead."""
    paths = {p for pattern in include for p in match_glob(str(pattern))}
    chosen: dict[tuple[int, int], str] = {}
    for p in sorted(paths):
        try:
            st = os.stat(p)
        except OSError:
            continue
        if excluded(p, exclude) or not stat.S_ISREG(st.st_mode):
            continue
        if refused is not None and os.path.realpath(p) != os.path.abspath(p):
            refused.add(p)
            continue
        seen = chosen.get((st.st_dev, st.st_ino))
        if seen is None or (os.path.islink(seen) and not os.path.islink(p)):
            chosen[(st.st_dev, st.st_ino)] = p
    return set(chosen.values())


def rotated_siblings(path: str) -> list[str]:
    """Files a rotation of ``path`` may have left: ``path.*`` and ``path-*`` beside its real file."""
    real = os.path.realpath(path)
    return sorted({*glob.glob(glob.escape(real) + ".*"), *glob.glob(glob.escape(real) + "-*")})
