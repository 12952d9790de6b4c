"""The audit trail: an append-only, hash-chained, Ed25519-signed log of everything that changes or reads data.

``<data_dir>/audit/audit.jsonl`` holds one JSON object per line:

    {"seq": 7, "time": "2026-11-24T10:00:00.123Z", "actor": "alice@host-1", "action": "retention",
     "details": {...}, "prev": "<hash of entry 6>", "hash": "<sha256>", "sig": "<base64 Ed25519>"}

``hash`` is the sha256 of the entry's canonical JSON without ``hash`` and ``sig``
(so it covers ``prev``: each entry vouches for the whole chain before it);
``sig`` signs ``hash`` with the audit key (``<data_dir>/keys/audit-signing.key``,
created on first use, 0600). The catalog keeps the head (last seq and hash), so
removing entries from the end is detected too. Appends from several processes
serialise on an exclusive lock of the log file.
"""

from __future__ import annotations

import base64
import fcntl
import getpass
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aggregator.errors import AuditError
from schemas.durable import fsync_path, write_durably

GENESIS = "0" * 64


def actor() -> str:
    return f"{os.environ.get('LOGLAKE_ACTOR') or getpass.getuser()}@{socket.gethostname()}"


def _canonical(entry: dict[str, Any]) -> bytes:
    return orjson.dumps({k: v for k, v in entry.items() if k not in ("hash", "sig")}, option=orjson.OPT_SORT_KEYS)


def _load_key(path: Path) -> Ed25519PrivateKey:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_durably(path, Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), mode=0o600)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditError(f"audit key {path} is not an Ed25519 key")
    return key


@dataclass(frozen=True)
class Problem:
    line: int      # 1-based line of the log, 0 for the log as a whole
    what: str

    def __str__(self) -> str:
        return f"audit log line {self.line}: {self.what}" if self.line else f"audit log: {self.what}"


class AuditLog:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "audit" / "audit.jsonl"
        self.key_path = data_dir / "keys" / "audit-signing.key"

    def append(self, action: str, details: dict[str, Any], set_head: Any = None) -> dict[str, Any]:
        """Append one entry; ``set_head(seq, hash)`` records the new head (in the catalog)."""
        key = _load_key(self.key_path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path, "ab+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                last = _last_line(f)
                prev = orjson.loads(last) if last else None
                entry: dict[str, Any] = {
                    "seq": prev["seq"] + 1 if prev else 1,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() // 10**6 % 1000:03d}Z",
                    "actor": actor(), "action": action, "details": details,
                    "prev": prev["hash"] if prev else GENESIS}
                entry["hash"] = hashlib.sha256(_canonical(entry)).hexdigest()
                entry["sig"] = base64.b64encode(key.sign(entry["hash"].encode())).decode()
                f.write(orjson.dumps(entry) + b"\n")
                f.flush()
                os.fsync(f.fileno())
                if set_head is not None:
                    set_head(entry["seq"], entry["hash"])
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        if entry["seq"] == 1:
            fsync_path(self.path.parent)
        return entry

    def public_key(self) -> Ed25519PublicKey:
        return _load_key(self.key_path).public_key()

    def entries(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for line in f:
                yield orjson.loads(line)

    def verify(self, head: tuple[int, str] | None, public: Ed25519PublicKey | None = None) -> tuple[int, list[Problem]]:
        """(entries checked, problems): broken links, altered entries, bad signatures, a missing tail."""
        public = public or (self.public_key() if self.key_path.exists() else None)
        problems: list[Problem] = []
        prev_hash, prev_seq, n = GENESIS, 0, 0
        if not self.path.exists():
            if head is not None:
                problems.append(Problem(0, f"the log is missing but the catalog's head is entry {head[0]}"))
            return 0, problems
        with open(self.path, "rb") as f:
            for n, raw in enumerate(f, start=1):
                try:
                    e = orjson.loads(raw)
                    seq, stored = e["seq"], e["hash"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    problems.append(Problem(n, "is not a readable audit entry (altered)"))
                    prev_seq += 1
                    prev_hash = ""
                    continue
                if seq != prev_seq + 1:
                    problems.append(Problem(n, f"has seq {seq} after {prev_seq}: "
                                               f"{'entries removed' if seq > prev_seq + 1 else 'entries repeated'}"))
                if prev_hash and e.get("prev") != prev_hash:
                    problems.append(Problem(n, f"(seq {seq}) does not link to the entry before it "
                                               "(an entry before it was altered or removed)"))
                if hashlib.sha256(_canonical(e)).hexdigest() != stored:
                    problems.append(Problem(n, f"(seq {seq}) was altered: its content does not match its hash"))
                elif public is not None:
                    try:
                        public.verify(base64.b64decode(e.get("sig", "")), stored.encode())
                    except (InvalidSignature, ValueError):
                        problems.append(Problem(n, f"(seq {seq}) has no valid signature from the audit key"))
                prev_hash, prev_seq = stored, seq
        if head is not None and (prev_seq, prev_hash) != tuple(head):
            problems.append(Problem(0, f"ends at entry {prev_seq} but the catalog's head is entry {head[0]}: "
                                       "entries were removed from the end"))
        return n, problems


def _last_line(f) -> bytes:  # type: ignore[no-untyped-def]
    """The last line of a file open for reading (a short backwards scan)."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    block = 4096
    data = b""
    while size > 0:
        step = min(block, size)
        size -= step
        f.seek(size)
        data = f.read(step) + data
        lines = data.rstrip(b"\n").split(b"\n")
        if len(lines) > 1 or size == 0:
            return lines[-1]
    return b""
