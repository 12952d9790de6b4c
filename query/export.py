"""Forensic exports: the matching records, a manifest, an Ed25519 signature — chain of custody.

``case.zip`` holds:

    records.parquet   the records (every column of the logs view), plain Parquet
    records.jsonl     the same records as JSON lines, readable without any tool
    manifest.json     what was asked (command, filters, SQL), when, by whom, how many rows,
                      the sha256 of both record files and of every stored file they came from,
                      and the signer's public key
    manifest.sig      Ed25519 signature of manifest.json's exact bytes (base64)

``verify`` recomputes every digest and checks the signature against a trusted
public key (``--public-key``, else the configured signing key's); a manifest
signed by any other key, an altered file, or an extra or missing member fails.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import io
import socket
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aggregator.catalog import FileEntry
from query import output
from query.errors import QueryError
from schemas.durable import write_durably

FORMAT = "loglake-export/1"
RECORDS = ("records.parquet", "records.jsonl")
MEMBERS = {*RECORDS, "manifest.json", "manifest.sig"}


def fingerprint(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:32]


def load_signing_key(path: Path, create: bool) -> Ed25519PrivateKey:
    if not path.exists():
        if not create:
            raise QueryError(f"no signing key at {path}; pass --public-key with the signer's public key")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption())
        write_durably(path, pem, mode=0o600)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as e:
        raise QueryError(f"signing key {path} cannot be loaded ({e}); it must be an unencrypted PEM Ed25519 key")
    if not isinstance(key, Ed25519PrivateKey):
        raise QueryError(f"signing key {path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (ValueError, OSError) as e:
        raise QueryError(f"public key {path} cannot be loaded ({e}); give the PEM file 'export' printed") from None
    if not isinstance(key, Ed25519PublicKey):
        raise QueryError(f"public key {path} is not an Ed25519 key")
    return key


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _digest(data: bytes) -> dict[str, object]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _jsonl(table: pa.Table) -> bytes:
    buf = io.StringIO()
    output.write(table, "json", buf)  # timestamps as RFC 3339 UTC text with nanoseconds
    return buf.getvalue().encode()


def write(out: Path, table: pa.Table, query: dict[str, object], sources: list[FileEntry],
          key: Ed25519PrivateKey) -> dict[str, object]:
    """Write the signed archive; returns its manifest."""
    pq_buf = io.BytesIO()
    pq.write_table(table, pq_buf, compression="zstd")
    members = {"records.parquet": pq_buf.getvalue(), "records.jsonl": _jsonl(table)}
    manifest = {
        "format": FORMAT,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "created_by": {"user": getpass.getuser(), "host": socket.gethostname()},
        "query": query,
        "rows": table.num_rows,
        "files": {name: _digest(data) for name, data in members.items()},
        "sources": [{"tier": f.tier, "path": f.path, "sha256": f.sha256, "rows": f.rows} for f in sources],
        "signer": {"algorithm": "Ed25519", "fingerprint": fingerprint(key.public_key()),
                   "public_key_pem": public_pem(key).decode()},
    }
    body = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    members["manifest.json"] = body
    members["manifest.sig"] = base64.b64encode(key.sign(body)) + b"\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    try:
        write_durably(out, buf.getvalue(), mode=0o600)
    except OSError as e:
        raise QueryError(f"cannot write {out}: {e}") from None
    return manifest


@dataclass(frozen=True)
class Verified:
    rows: int
    signer: str
    trusted: bool   # checked against a key given or configured, not only the one inside the archive
    query: dict[str, object]


def verify(archive: Path, trusted: Ed25519PublicKey | None) -> Verified:
    """Check an archive; raises QueryError naming the first problem found."""
    try:
        with zipfile.ZipFile(archive) as z:
            names = set(z.namelist())
            if names != MEMBERS:
                raise QueryError(f"{archive} is not an intact loglake export: members {sorted(names)} "
                                 f"differ from {sorted(MEMBERS)}")
            data = {n: z.read(n) for n in names}
    except (zipfile.BadZipFile, OSError) as e:
        raise QueryError(f"{archive} cannot be read as a zip archive ({e})") from None
    try:
        manifest = orjson.loads(data["manifest.json"])
        signature = base64.b64decode(data["manifest.sig"].strip(), validate=True)
        embedded = serialization.load_pem_public_key(manifest["signer"]["public_key_pem"].encode())
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as e:
        raise QueryError(f"{archive}: the manifest or its signature is malformed ({e})") from None
    key = trusted or embedded
    if not isinstance(key, Ed25519PublicKey):
        raise QueryError(f"{archive}: the manifest names no Ed25519 signer")
    try:
        key.verify(signature, data["manifest.json"])
    except InvalidSignature:
        who = "the trusted key " + fingerprint(key) if trusted else "the key inside the archive"
        raise QueryError(f"{archive}: manifest.json is not signed by {who} (altered, or signed by someone else)") \
            from None
    for name in RECORDS:
        want = manifest["files"].get(name)
        if want != _digest(data[name]):
            raise QueryError(f"{archive}: {name} does not match the sha256 in the signed manifest (altered)")
    return Verified(rows=manifest["rows"], signer=fingerprint(key), trusted=trusted is not None,
                    query=manifest["query"])
