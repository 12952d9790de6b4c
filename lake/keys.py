"""Envelope encryption: data keys that encrypt Parquet files, wrapped by a master key.

- **Data keys** (32 random bytes) encrypt files with DuckDB's Parquet encryption
  (AES-GCM). There is one per tier and UTC day of the data (scope ``hot_20261124``):
  retention works by age, so when a day's last file is gone its key can be destroyed
  (crypto-shredding), which makes every copy of those files, backups included,
  unreadable. Per-file keys would shred at a finer grain but make a query register
  and union one key per file; per day and tier keeps a query to a few keys.
- **Data keys are stored wrapped** (AES-256-GCM under the master key, the key id as
  associated data) in the catalog; the raw key never touches disk.
- **The master key** comes from, in order: ``master_key_command`` (a KMS hook: its
  stdout is the base64 key), the ``LOGLAKE_AGGREGATOR_MASTER_KEY`` variable, or
  ``key_file`` (created on first run, mode 0600). Rotating it rewraps every data key
  and rewrites no data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import shlex
import stat
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lake.catalog.base import Catalog
from lake.catalog.model import FileEntry, Tier
from lake.config import AggregatorConfig
from runtime.durable import write_durably
from runtime.errors import EncryptionKeyError

KEY_BYTES = 32
_NONCE = 12


@dataclass(frozen=True)
class MasterKey:
    raw: bytes
    source: str  # where it came from, for error messages

    @property
    def key_id(self) -> str:
        return "mk_" + hashlib.sha256(b"loglake-master-key-id" + self.raw).hexdigest()[:16]

    def __repr__(self) -> str:  # never print key material
        return f"MasterKey({self.key_id} from {self.source})"


@dataclass(frozen=True)
class DataKey:
    key_id: str
    raw: bytes

    @property
    def b64(self) -> str:  # the form DuckDB's add_parquet_key takes
        return base64.b64encode(self.raw).decode()

    def __repr__(self) -> str:
        return f"DataKey({self.key_id})"


def key_scope(tier: Tier, time_ns: int) -> str:
    """The scope of the data key for data of ``tier`` at ``time_ns``: tier and UTC day."""
    return f"{tier}_{time.strftime('%Y%m%d', time.gmtime(time_ns // 1_000_000_000))}"


def _decode(text: str, source: str) -> MasterKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise EncryptionKeyError(f"the master key from {source} is not a base64 {KEY_BYTES}-byte key")
    return MasterKey(raw, source)


def _from_file(path: Path) -> MasterKey:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise EncryptionKeyError(f"encryption key file {path} does not exist; restore it from your key backup "
                                 "(without it the stored logs cannot be read)") from None
    except PermissionError:
        raise EncryptionKeyError(f"encryption key file {path} is not readable by this user; "
                                 "run as the key's owner or fix its permissions") from None
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise EncryptionKeyError(f"encryption key file {path} is readable by group or others; run 'chmod 600 {path}'")
    return _decode(text, str(path))


def _from_command(command: str) -> MasterKey:
    # Only the program is named in messages: a KMS hook's arguments often carry a token.
    try:
        argv = shlex.split(command)
    except ValueError:
        raise EncryptionKeyError("master_key_command is not a valid shell command line (unbalanced quotes)") from None
    what = f"master_key_command ({Path(argv[0]).name if argv else 'empty'}; arguments not shown)"
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    except subprocess.CalledProcessError as e:
        raise EncryptionKeyError(f"{what} failed with exit status {e.returncode}; check the KMS hook") from None
    except subprocess.TimeoutExpired:
        raise EncryptionKeyError(f"{what} did not answer within 30 s; check the KMS hook") from None
    except OSError as e:
        raise EncryptionKeyError(f"{what} cannot be run ({e.strerror}); check the KMS hook") from None
    return _decode(out, what)


def load_master(key_file: Path, *, env_key: str | None = None, command: str | None = None,
                create: bool = False) -> MasterKey:
    if command:
        return _from_command(command)
    if env_key:
        return _decode(env_key, "[aggregator] master_key (or LOGLAKE_AGGREGATOR_MASTER_KEY)")
    if create and not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_durably(key_file, base64.b64encode(secrets.token_bytes(KEY_BYTES)) + b"\n", mode=0o600)
    return _from_file(key_file)


def master_for(cfg: AggregatorConfig, create: bool = False) -> MasterKey:
    return load_master(cfg.resolved_key_file, env_key=cfg.master_key, command=cfg.master_key_command, create=create)


def new_master_file(path: Path) -> MasterKey:
    """A fresh master key written to ``path`` (which must not exist), for rotation."""
    if path.exists():
        raise EncryptionKeyError(f"{path} already exists; choose a new file for the new master key")
    return load_master(path, create=True)


class KeyRing:
    """Data keys of one catalog, unwrapped on demand with the master key."""

    def __init__(self, catalog: Catalog, master: MasterKey) -> None:
        self.catalog = catalog
        self.master = master
        self._cache: dict[str, DataKey] = {}

    def _wrap(self, key_id: str, raw: bytes, master: MasterKey | None = None) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + AESGCM((master or self.master).raw).encrypt(nonce, raw, key_id.encode())

    def _unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        try:
            return AESGCM(self.master.raw).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], key_id.encode())
        except InvalidTag:
            raise EncryptionKeyError(f"the master key from {self.master.source} does not open data key {key_id}; "
                                     "it is not the master key this catalog was written with (after a rotation, "
                                     "use the new one)") from None

    def for_scope(self, scope: str) -> DataKey:
        """The live data key of a scope (e.g. ``hot_20261124``), created on first use."""
        row = self.catalog.live_data_key(scope)
        return self.get(row[0]) if row is not None else self.new_for_scope(scope)

    def new_for_scope(self, scope: str) -> DataKey:
        """A new live data key for a scope; later writes use it, so the previous one can be destroyed
        once its files are gone (retention and erasure re-encrypt under it)."""
        key_id = f"dk_{scope}_{secrets.token_hex(4)}"
        raw = secrets.token_bytes(KEY_BYTES)
        self.catalog.add_data_key(key_id, scope, self._wrap(key_id, raw), self.master.key_id)
        self._cache[key_id] = DataKey(key_id, raw)
        return self._cache[key_id]

    def get(self, key_id: str) -> DataKey:
        if key_id not in self._cache:
            row = self.catalog.data_key(key_id)
            if row is None:
                raise EncryptionKeyError(f"data key {key_id} is not in the catalog; the catalog and the files disagree")
            wrapped, destroyed_at = row
            if destroyed_at is not None:
                raise EncryptionKeyError(f"data key {key_id} was destroyed (crypto-shredded); its files cannot be read")
            self._cache[key_id] = DataKey(key_id, self._unwrap(key_id, wrapped))
        return self._cache[key_id]

    def by_key(self, files: Iterable[FileEntry], location: Callable[[Tier, str], str]) -> dict[DataKey, list[str]]:
        """Where each of ``files`` is (``location(tier, path)``), grouped by its data key: what a scan of
        them takes (lake.duck.scan_sql)."""
        out: dict[DataKey, list[str]] = {}
        for f in files:
            out.setdefault(self.get(f.key_id), []).append(location(f.tier, f.path))
        return out

    def rotate(self, new: MasterKey) -> int:
        """Rewrap every live data key under ``new``; no file is rewritten. Returns how many."""
        rewrapped = {}
        for key_id, wrapped in self.catalog.live_data_keys():
            rewrapped[key_id] = self._wrap(key_id, self._unwrap(key_id, wrapped), new)
        self.catalog.rewrap_data_keys(rewrapped, new.key_id)
        self.master = new
        return len(rewrapped)

    def lineage(self, inputs: Iterable[FileEntry]) -> tuple[str, ...]:
        """The keys that ever encrypted the records of ``inputs`` and can still open a copy of them."""
        keys = frozenset().union(*(f.lineage for f in inputs))
        destroyed = {k for k, _, _, gone in self.catalog.data_key_list() if gone}
        return tuple(sorted(keys - destroyed))

    def destroy(self, key_id: str) -> None:
        """Crypto-shred: forget the wrapped key for good."""
        if self.catalog.data_key(key_id) is None:
            raise EncryptionKeyError(f"there is no data key {key_id}; see 'loglake-aggregator keys list'")
        self.catalog.destroy_data_key(key_id)
        self._cache.pop(key_id, None)
