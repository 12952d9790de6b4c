"""The audit trail: an append-only, hash-chained, Ed25519-signed log of everything that changes or reads data.

``<data_dir>/audit/audit.jsonl`` holds one JSON object per line:

    {"seq": 7, "time": "2026-11-24T10:00:00.123Z", "actor": "alice@host-1",
     "os_user": {"uid": 1000, "name": "alice"}, "action": "retention", "details": {...},
     "signer": "ed25519:<hex public key>", "prev": "<hash of entry 6>", "hash": "<sha256>",
     "sig": "<base64 Ed25519>"}

``hash`` is the sha256 of the entry's canonical JSON without ``hash`` and ``sig``
(so it covers ``prev``: each entry vouches for the whole chain before it);
``sig`` signs ``hash`` with the audit key (``<data_dir>/keys/audit-signing.key``,
created on first use, 0600). The catalog keeps the head (last seq and hash), so
removing entries from the end is detected too, and pins the audit public key
(trust on first use, or ``[aggregator] audit_key_fingerprint`` set by the
operator): an entry signed by another key fails ``verify``, a missing or
replaced signing key is refused rather than silently regenerated, and the
signatures are checked with the pinned public key even when the private key is
gone. Appends from several processes serialise on an exclusive lock of the log file.

``actor`` is the name the caller claims (``LOGLAKE_ACTOR``, else the login
name); ``os_user`` is the uid the process really runs as, with its name from the
password database, which no environment variable changes.
"""

from __future__ import annotations

import base64
import fcntl
import getpass
import hashlib
import os
import pwd
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from runtime.durable import fsync_path, write_durably
from runtime.errors import AuditError

if TYPE_CHECKING:
    from lake.catalog.base import Catalog
    from lake.config import AggregatorConfig

GENESIS = "0" * 64


def actor() -> str:
    """The name the caller claims: ``LOGLAKE_ACTOR`` or the login name, at this host."""
    return f"{os.environ.get('LOGLAKE_ACTOR') or getpass.getuser()}@{socket.gethostname()}"


def os_user() -> dict[str, Any]:
    """The identity the process really runs as: its effective uid, named by the password database."""
    uid = os.geteuid()
    try:
        name: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = None
    return {"uid": uid, "name": name}


def who(entry: dict[str, Any]) -> str:
    """An entry's actor as an auditor should read it: the claimed name, and the real OS user when it differs."""
    claimed, real = entry.get("actor", "?"), (entry.get("os_user") or {}).get("name")
    return claimed if real is None or claimed.split("@", 1)[0] == real else f"{claimed} (OS user {real})"


def fingerprint(public: Ed25519PublicKey) -> str:
    return "ed25519:" + public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def _public_from(pinned: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(pinned.removeprefix("ed25519:")))


def _canonical(entry: dict[str, Any]) -> bytes:
    return orjson.dumps({k: v for k, v in entry.items() if k not in ("hash", "sig")}, option=orjson.OPT_SORT_KEYS)


def _load_key(path: Path, create: bool) -> Ed25519PrivateKey:
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_durably(path, Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), mode=0o600)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise AuditError(f"the audit signing key {path} is missing; restore it from your key backup (the "
                         "catalog pins its public key, so a new key would not be trusted)") from None
    except (ValueError, TypeError, OSError) as e:
        raise AuditError(f"audit key {path} cannot be loaded ({e}); restore it from your key backup") from None
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
    """The trail of one lake; its head and pinned public key live in ``catalog``."""

    def __init__(self, data_dir: Path, catalog: Catalog, expected_fingerprint: str | None = None) -> None:
        self.path = data_dir / "audit" / "audit.jsonl"
        self.key_path = data_dir / "keys" / "audit-signing.key"
        self.catalog = catalog
        self.expected = expected_fingerprint

    @classmethod
    def of(cls, cfg: AggregatorConfig, catalog: Catalog) -> AuditLog:
        return cls(cfg.data_dir, catalog, cfg.audit_key_fingerprint)

    def _pinned(self) -> str | None:
        """The public key entries must be signed with: the operator's, else the catalog's pin."""
        pinned = self.catalog.audit_key()
        if self.expected and pinned and pinned != self.expected:
            raise AuditError(f"the catalog pins audit key {pinned}, not the {self.expected} that "
                             "[aggregator] audit_key_fingerprint names; the catalog was altered or belongs "
                             "to another lake")
        return self.expected or pinned

    def _signing_key(self) -> tuple[Ed25519PrivateKey, str]:
        pinned = self._pinned()
        first_use = pinned is None and not self.path.exists()
        if first_use and (self.catalog.audit_head() is not None or self.catalog.audit_evidence()):
            raise AuditError(self._removed())
        key = _load_key(self.key_path, create=first_use)
        mine = fingerprint(key.public_key())
        if pinned is None:
            self.catalog.set_audit_key(mine)
        elif mine != pinned:
            raise AuditError(f"the audit signing key {self.key_path} is {mine}, but this lake's trail is "
                             f"signed by {pinned}; restore the original key from your key backup")
        return key, mine

    def ready(self) -> None:
        """Check (and on a lake's first use, start) the trail before an action it will record, so the
        action is not done when its entry cannot be written."""
        self._signing_key()

    def _removed(self) -> str:
        return (f"the audit trail {self.path} is missing, but the catalog records actions that were audited "
                "(holds, deletions, destroyed keys); restore the trail and its key from backup")

    def append(self, action: str, details: dict[str, Any]) -> dict[str, Any]:
        """Append one entry and record the new head in the catalog. Raises AuditError (nothing done)
        when the entry cannot be signed with the lake's key."""
        key, signer = self._signing_key()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path, "ab+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                last = _last_line(f)
                prev = orjson.loads(last) if last else None
                entry: dict[str, Any] = {
                    "seq": prev["seq"] + 1 if prev else 1,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() // 10**6 % 1000:03d}Z",
                    "actor": actor(), "os_user": os_user(), "action": action, "details": details,
                    "signer": signer, "prev": prev["hash"] if prev else GENESIS}
                entry["hash"] = hashlib.sha256(_canonical(entry)).hexdigest()
                entry["sig"] = base64.b64encode(key.sign(entry["hash"].encode())).decode()
                f.write(orjson.dumps(entry) + b"\n")
                f.flush()
                os.fsync(f.fileno())
                self.catalog.set_audit_head(entry["seq"], entry["hash"])
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        if entry["seq"] == 1:
            fsync_path(self.path.parent)
        return entry


    def entries(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for line in f:
                yield orjson.loads(line)

    def verify(self) -> tuple[int, list[Problem]]:
        """(entries checked, problems): broken links, altered entries, entries not signed by the pinned
        key, a missing or replaced signing key, a missing tail."""
        head = self.catalog.audit_head()
        problems: list[Problem] = []
        try:
            pinned = self._pinned()
        except AuditError as e:
            return 0, [Problem(0, str(e))]
        public: Ed25519PublicKey | None = None
        if pinned is not None:
            public = _public_from(pinned)
        if self.key_path.exists():
            try:
                mine = fingerprint(_load_key(self.key_path, create=False).public_key())
                if pinned is not None and mine != pinned:
                    problems.append(Problem(0, f"the signing key {self.key_path} is {mine}, not the pinned {pinned}: "
                                               "it was replaced"))
                public = public or _public_from(mine)
            except AuditError as e:
                problems.append(Problem(0, str(e)))
        elif self.path.exists():
            problems.append(Problem(0, f"the audit signing key {self.key_path} is missing: no more entries can "
                                       "be signed; restore it from your key backup"))
        if public is None and self.path.exists():
            problems.append(Problem(0, "no audit public key is pinned and the signing key is missing: "
                                       "no signature can be checked"))
        prev_hash, prev_seq, n = GENESIS, 0, 0
        if not self.path.exists() and head is None and self.catalog.audit_evidence():
            problems.append(Problem(0, self._removed()))
        if not self.path.exists():
            if head is not None:
                problems.append(Problem(0, f"the log is missing but the catalog's head is entry {head[0]}"))
            return 0, problems
        with open(self.path, "rb") as f:
            for n, raw in enumerate(f, start=1):
                try:
                    entry = orjson.loads(raw)
                    seq, stored = entry["seq"], entry["hash"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    problems.append(Problem(n, "is not a readable audit entry (altered)"))
                    prev_seq += 1
                    prev_hash = ""
                    continue
                if seq != prev_seq + 1:
                    problems.append(Problem(n, f"has seq {seq} after {prev_seq}: "
                                               f"{'entries removed' if seq > prev_seq + 1 else 'entries repeated'}"))
                if prev_hash and entry.get("prev") != prev_hash:
                    problems.append(Problem(n, f"(seq {seq}) does not link to the entry before it "
                                               "(an entry before it was altered or removed)"))
                if hashlib.sha256(_canonical(entry)).hexdigest() != stored:
                    problems.append(Problem(n, f"(seq {seq}) was altered: its content does not match its hash"))
                elif public is not None:
                    try:
                        public.verify(base64.b64decode(entry.get("sig", "")), stored.encode())
                    except (InvalidSignature, ValueError, TypeError):
                        problems.append(Problem(n, f"(seq {seq}) has no valid signature from the audit key"))
                prev_hash, prev_seq = stored, seq
        if head is not None and (prev_seq, prev_hash) != tuple(head):
            problems.append(Problem(0, f"ends at entry {prev_seq} but the catalog's head is entry {head[0]}: "
                                       "entries were removed from the end"))
        return n, problems


def _last_line(f: BinaryIO) -> bytes:
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
