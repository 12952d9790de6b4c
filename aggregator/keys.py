"""The encryption key of stored Parquet files.

The key file holds 32 random bytes, base64, one line; it is created on first
run with owner-only permissions (0600) inside an owner-only directory. Files
record the key's id (a hash prefix, never the key), so a reader can tell a
wrong key from a corrupt file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from aggregator.errors import EncryptionKeyError
from schemas.durable import write_durably

KEY_BYTES = 32


@dataclass(frozen=True)
class Key:
    key_id: str
    b64: str  # the form DuckDB's add_parquet_key takes

    def __repr__(self) -> str:  # never print key material
        return f"Key({self.key_id})"


def _key_id(raw: bytes) -> str:
    return "k" + hashlib.sha256(b"loglake-key-id" + raw).hexdigest()[:16]


def load(path: Path) -> Key:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise EncryptionKeyError(f"encryption key file {path} does not exist; restore it from your key backup "
                                 "(without it the stored logs cannot be read)") from None
    except PermissionError:
        raise EncryptionKeyError(f"encryption key file {path} is not readable by this user; "
                                 "run as the key's owner or fix its permissions") from None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise EncryptionKeyError(f"encryption key file {path} does not hold a base64 {KEY_BYTES}-byte key")
    return Key(_key_id(raw), base64.b64encode(raw).decode())


def load_or_create(path: Path) -> Key:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_durably(path, base64.b64encode(os.urandom(KEY_BYTES)) + b"\n", mode=0o600)
    elif stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise EncryptionKeyError(f"encryption key file {path} is readable by group or others; "
                                 f"run 'chmod 600 {path}'")
    return load(path)
