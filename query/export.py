"""Forensic exports: the matching records, a manifest, an Ed25519 signature — chain of custody.

``case.zip`` holds exactly four plain files, in this order:

    records.parquet   the records (every column of the logs view), plain Parquet
    records.jsonl     the same records as JSON lines, readable without any tool
    manifest.json     what was asked (command, filters, SQL), when, by whom, how many rows,
                      the sha256 of both record files and of every stored file they came from,
                      and the signer's public key
    manifest.sig      Ed25519 signature of manifest.json's exact bytes (base64)

``verify`` needs nothing but the archive and, to say who signed it, the signer's public key:
no lake, no configuration. It refuses anything a zip tool could read differently from it —
duplicate, extra, missing or directory members, names with path components, links,
encryption, bytes hidden between or around the members — and bounds its work before reading:
every member's declared size is checked against a limit, and members are inflated in chunks
counting the real bytes (declared sizes can lie), hashed as they stream, never held whole.
An archive checked only against the key inside it is not a success unless the caller asks
for that explicitly (``trust_embedded``): anyone can re-sign a forgery with a key of their own.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import io
import os
import re
import socket
import stat
import struct
import time
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from query import output
from runtime.durable import write_durably
from runtime.errors import QueryError

# zipfile's own reading of an archive's end record and directory: not in its public API or its stubs
_zip: Any = zipfile

if TYPE_CHECKING:
    from lake.catalog.model import FileEntry

FORMAT = "loglake-export/1"
RECORDS = ("records.parquet", "records.jsonl")
ORDER = (*RECORDS, "manifest.json", "manifest.sig")   # the members, in the order ``write`` stores them
MEMBERS = frozenset(ORDER)

DEFAULT_MAX_BYTES = 4 << 30        # both record files together, uncompressed
MAX_MANIFEST_BYTES = 4 << 20       # ~20,000 source files; ``write`` refuses a larger manifest
MAX_SIGNATURE_BYTES = 1 << 10      # base64 of 64 bytes is 88
MAX_DIRECTORY_BYTES = 64 << 10     # the zip's central directory (four entries take ~250 bytes)
CHUNK = 1 << 20                    # compressed bytes read, and decompressed bytes produced, per step

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
    except OSError as e:
        raise QueryError(f"cannot read public key {path}: {e.strerror or e}") from None
    except (ValueError, UnsupportedAlgorithm):
        raise QueryError(f"public key {path} is not a PEM public key; give the signer's Ed25519 public key "
                         f"as a PEM file") from None
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


def write(out: Path, table: pa.Table, query: Mapping[str, object], sources: list[FileEntry],
          key: Ed25519PrivateKey) -> dict[str, Any]:
    """Write the signed archive (members in ``ORDER``); returns its manifest."""
    members = {"records.parquet": output.parquet_bytes(table), "records.jsonl": _jsonl(table)}
    size = sum(len(d) for d in members.values())
    if size > DEFAULT_MAX_BYTES:
        raise QueryError(f"the export would hold {size} bytes of records, over the {DEFAULT_MAX_BYTES} that "
                         f"verify-export accepts by default; narrow the filters or the time window")
    now = time.gmtime()
    manifest = {
        "format": FORMAT,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", now),
        "created_by": {"user": getpass.getuser(), "host": socket.gethostname()},
        "query": query,
        "rows": table.num_rows,
        "files": {name: _digest(data) for name, data in members.items()},
        "sources": [{"tier": f.tier, "path": f.path, "sha256": f.sha256, "rows": f.rows} for f in sources],
        "signer": {"algorithm": "Ed25519", "fingerprint": fingerprint(key.public_key()),
                   "public_key_pem": public_pem(key).decode()},
    }
    body = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    if len(body) > MAX_MANIFEST_BYTES:
        raise QueryError(f"the export's manifest would be {len(body)} bytes (it lists {len(sources)} source "
                         f"files), over the {MAX_MANIFEST_BYTES} verify-export accepts; narrow the filters "
                         f"or the time window")
    members["manifest.json"] = body
    members["manifest.sig"] = base64.b64encode(key.sign(body)) + b"\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in ORDER:  # plain regular files, one timestamp, a fixed order
            info = zipfile.ZipInfo(name, date_time=(now.tm_year, now.tm_mon, now.tm_mday, now.tm_hour, now.tm_min, now.tm_sec))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so the mode below means what it says
            info.external_attr = (stat.S_IFREG | 0o600) << 16
            z.writestr(info, members[name])
    try:
        write_durably(out, buf.getvalue(), mode=0o600)
    except OSError as e:
        raise QueryError(f"cannot write {out}: {e}") from None
    return manifest


@dataclass(frozen=True)
class Verified:
    rows: int
    signer: str     # fingerprint of the key the signature was checked against
    trusted: bool   # that key was given by the caller; False: only the key inside the archive (trust_embedded)
    query: dict[str, object]


def verify(archive: Path, trusted: Ed25519PublicKey | None = None, *, trust_embedded: bool = False,
           max_bytes: int = DEFAULT_MAX_BYTES) -> Verified:
    """Check an archive on its own: its zip structure, the manifest's signature, and every digest.

    ``trusted`` is the signer's public key. Without it the only key is the one inside the archive,
    which anyone re-signing a forgery puts there: that fails unless ``trust_embedded`` (an integrity
    check only; the result says ``trusted=False``). ``max_bytes`` bounds the two record files
    together, uncompressed. Raises QueryError with one sentence naming the first problem found."""
    archive = Path(archive)
    try:
        fh = open(archive, "rb")  # one handle for zipfile and the raw reads; closed below
    except OSError as e:
        raise QueryError(f"cannot read {archive}: {e.strerror or e}") from None
    with fh:
        try:
            entries = _entries(archive, fh)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, struct.error,
                ValueError) as e:
            raise QueryError(f"{archive} cannot be read as a zip archive ({e})") from None
        except OSError as e:
            raise QueryError(f"cannot read {archive}: {e.strerror or e}") from None
        for name, limit in (("manifest.json", MAX_MANIFEST_BYTES), ("manifest.sig", MAX_SIGNATURE_BYTES)):
            if entries[name].file_size > limit:
                raise QueryError(f"{archive}: {name} declares {entries[name].file_size} bytes, over the {limit} "
                                 f"a loglake export's {name} can take (not an export, or a zip bomb)")
        declared = sum(entries[n].file_size for n in RECORDS)
        if declared > max_bytes:
            raise QueryError(f"{archive}: the record files declare {declared} bytes uncompressed, over the "
                             f"{max_bytes}-byte verification limit (a zip bomb, or an export that needs "
                             f"a higher --max-bytes)")
        body = _read(archive, fh, entries["manifest.json"])
        sig_text = _read(archive, fh, entries["manifest.sig"])
        try:
            signature = base64.b64decode(sig_text.strip(), validate=True)
        except ValueError:
            signature = b""
        if len(signature) != 64:
            raise QueryError(f"{archive}: manifest.sig is not the base64 of an Ed25519 signature")
        if trusted is not None:
            try:
                trusted.verify(signature, body)
            except InvalidSignature:
                raise QueryError(f"{archive}: manifest.json is not signed by the trusted key {fingerprint(trusted)} "
                                 f"(altered, or signed by someone else)") from None
        manifest = _manifest(archive, body)
        embedded = manifest.signer
        if trusted is not None:
            if _raw(embedded) != _raw(trusted):
                raise QueryError(f"{archive}: manifest.json is signed by the trusted key {fingerprint(trusted)} "
                                 f"but names {fingerprint(embedded)} as its signer (not as export wrote it)")
            key = trusted
        elif not trust_embedded:
            raise QueryError(f"{archive} is signed only by the key inside it ({fingerprint(embedded)}, which "
                             f"anyone re-signing a forgery can put there); pass --public-key "
                             f"with the signer's public key, obtained from the signer and not from the archive, "
                             f"or --trust-embedded-key to check integrity only")
        else:
            try:
                embedded.verify(signature, body)
            except InvalidSignature:
                raise QueryError(f"{archive}: manifest.json is not signed by the key inside the archive "
                                 f"(altered)") from None
            key = embedded
        for name in RECORDS:
            want = manifest.files[name]
            if entries[name].file_size != want["bytes"]:
                raise QueryError(f"{archive}: {name} does not match the sha256 in the signed manifest (altered: its "
                                 f"zip entry declares {entries[name].file_size} bytes, the manifest "
                                 f"{want['bytes']})")
            h = hashlib.sha256()
            _stream(archive, fh, entries[name], h.update)
            if h.hexdigest() != want["sha256"]:
                raise QueryError(f"{archive}: {name} does not match the sha256 in the signed manifest (altered)")
    return Verified(rows=manifest.rows, signer=fingerprint(key), trusted=trusted is not None, query=manifest.query)


# ---- the zip structure, read defensively ----

_LOCAL = struct.Struct("<4s2B4HL2L2H")   # local file header: signature … name length, extra length
_LOCAL_SIG = b"PK\x03\x04"
_ALLOWED_FLAGS = 0x0006 | 0x0800         # deflate option bits, UTF-8 names; no encryption, no data descriptor


@dataclass(frozen=True)
class _Entry:
    name: str
    method: int
    offset: int         # of the member's (compressed) data in the archive
    compress_size: int
    file_size: int      # declared; _stream checks the real size against it
    crc: int


def _entries(archive: Path, fh: io.BufferedReader) -> dict[str, _Entry]:
    """The four members, after checking nothing else is in the archive or could be read differently."""
    st = os.fstat(fh.fileno())
    if not stat.S_ISREG(st.st_mode):
        raise QueryError(f"{archive} is not a regular file")
    # Bound the central directory before zipfile reads it all (and makes an object per entry).
    end = _zip._EndRecData(fh)  # zipfile's own reading of it, so both agree on where it is
    if not end:
        raise QueryError(f"{archive} cannot be read as a zip archive (it has no end of central directory: "
                         f"not a zip, or truncated)")
    if end[_zip._ECD_SIZE] > MAX_DIRECTORY_BYTES:
        raise QueryError(f"{archive} is not a loglake export: its zip directory takes {end[_zip._ECD_SIZE]} "
                         f"bytes, more than {MAX_DIRECTORY_BYTES} (an export has four entries)")
    if end[_zip._ECD_COMMENT] or end[_zip._ECD_LOCATION] + _zip.sizeEndCentDir != st.st_size:
        raise QueryError(f"{archive} is not an intact loglake export: bytes follow its zip directory")
    fh.seek(0)
    with zipfile.ZipFile(fh) as z:
        infos = z.infolist()
        start_dir = z.start_dir
    bad = f"{archive} is not an intact loglake export:"
    _check_directory(bad, fh, start_dir, end, len(infos))
    want = f"an export holds exactly {', '.join(ORDER)}"
    seen: set[str] = set()
    for info in infos:
        name = info.orig_filename  # as stored: zipfile cuts ``filename`` at a NUL
        if name.endswith("/") or info.external_attr & 0x10 or stat.S_ISDIR(info.external_attr >> 16):
            raise QueryError(f"{bad} it holds a directory entry {name!r}; {want}")
        if any(ord(c) < 32 or c == "\x7f" for c in name):
            raise QueryError(f"{bad} member {name!r} has a control character in its name; {want}")
        if any(c in name for c in "/\\:") or name.startswith(".."):
            raise QueryError(f"{bad} member {name!r} has a path component; {want}")
        if name not in MEMBERS:
            raise QueryError(f"{bad} unexpected member {name!r}; {want}")
        if name in seen:
            raise QueryError(f"{bad} it holds more than one member named {name!r} (a zip tool may extract "
                             f"a different copy than the one checked)")
        seen.add(name)
        mode = info.external_attr >> 16
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.flag_bits & ~_ALLOWED_FLAGS \
                or stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            raise QueryError(f"{bad} member {name!r} is not a plain stored or deflated file (compression "
                             f"{info.compress_type}, flags {info.flag_bits:#x}, mode {mode:#o})")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise QueryError(f"{bad} stored member {name!r} declares {info.file_size} bytes but holds "
                             f"{info.compress_size}")
    if missing := [n for n in ORDER if n not in seen]:
        raise QueryError(f"{bad} it lacks {', '.join(missing)}; {want}")
    # The members must tile the archive from byte 0 to the directory, each local header agreeing
    # with the directory: no hidden or overlapping data for a streaming unzip to read instead.
    entries: dict[str, _Entry] = {}
    pos = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        if info.header_offset < pos:
            raise QueryError(f"{bad} member {info.orig_filename!r} overlaps the one before it")
        if info.header_offset > pos:
            raise QueryError(f"{bad} bytes {'precede' if pos == 0 else 'hide before'} member {info.orig_filename!r}")
        fh.seek(pos)
        head = fh.read(_LOCAL.size)
        if len(head) != _LOCAL.size:
            raise QueryError(f"{bad} member {info.orig_filename!r} is truncated")
        sig, _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len = _LOCAL.unpack(head)
        local_name = fh.read(name_len)
        if sig != _LOCAL_SIG or local_name != info.orig_filename.encode("ascii") or flags != info.flag_bits \
                or method != info.compress_type or crc != info.CRC \
                or (csize != 0xFFFFFFFF and csize != info.compress_size) \
                or (usize != 0xFFFFFFFF and usize != info.file_size):
            raise QueryError(f"{bad} the local header of member {info.orig_filename!r} disagrees with its "
                             f"zip directory entry")
        offset = pos + _LOCAL.size + name_len + extra_len
        pos = offset + info.compress_size
        if pos > start_dir:
            raise QueryError(f"{bad} member {info.orig_filename!r} runs into the zip directory")
        entries[info.orig_filename] = _Entry(info.orig_filename, info.compress_type, offset, info.compress_size,
                                             info.file_size, info.CRC)
    if pos != start_dir:
        raise QueryError(f"{bad} bytes hide between its last member and its zip directory")
    return entries


_CENTRAL = struct.Struct(_zip.structCentralDir)


def _check_directory(bad: str, fh: io.BufferedReader, start_dir: int, end: list, count: int) -> None:
    """zipfile stops at the directory's declared size and ignores the entry counts; a tool that trusts the
    counts or the entries' own lengths must find the same entries: no overrun, no comments, one disk."""
    if end[_zip._ECD_DISK_NUMBER] or end[_zip._ECD_DISK_START] or end[_zip._ECD_COMMENT_SIZE] \
            or end[_zip._ECD_ENTRIES_THIS_DISK] != count or end[_zip._ECD_ENTRIES_TOTAL] != count:
        raise QueryError(f"{bad} its end-of-directory record does not describe its {count} directory entries")
    size = end[_zip._ECD_SIZE]
    fh.seek(start_dir)
    data = fh.read(size)
    pos = entries = 0
    while pos + _CENTRAL.size <= len(data):
        f = _CENTRAL.unpack_from(data, pos)
        if f[14] or f[15]:  # an entry comment, a disk number
            raise QueryError(f"{bad} a zip directory entry carries a comment or a disk number")
        pos += _CENTRAL.size + f[12] + f[13] + f[14]  # name, extra field, comment lengths
        entries += 1
    if len(data) != size or pos != size or entries != count:
        raise QueryError(f"{bad} its zip directory entries do not fill the directory exactly")


def _stream(archive: Path, fh: io.BufferedReader, e: _Entry, sink: Callable[[bytes], object]) -> None:
    """Pass a member's bytes to ``sink`` chunk by chunk, stopping as soon as they exceed its declared size."""
    fh.seek(e.offset)
    left = e.compress_size
    inflater = zlib.decompressobj(-zlib.MAX_WBITS) if e.method == zipfile.ZIP_DEFLATED else None
    size = crc = 0

    def emit(data: bytes) -> None:
        nonlocal size, crc
        size += len(data)
        if size > e.file_size:
            raise QueryError(f"{archive}: {e.name} inflates past the {e.file_size} bytes its zip entry declares "
                             f"(a zip bomb, or a damaged archive)")
        crc = zlib.crc32(data, crc)
        sink(data)

    try:
        while left:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                raise QueryError(f"{archive}: {e.name} is truncated")
            left -= len(chunk)
            if inflater is None:
                emit(chunk)
                continue
            if inflater.eof:
                break
            emit(inflater.decompress(chunk, CHUNK))
            while inflater.unconsumed_tail:
                emit(inflater.decompress(inflater.unconsumed_tail, CHUNK))
        if inflater is not None:
            emit(inflater.flush())
            if not inflater.eof or inflater.unused_data or left:
                raise QueryError(f"{archive}: {e.name} is not one complete deflate stream (damaged, or bytes "
                                 f"hidden after it)")
    except zlib.error as err:
        raise QueryError(f"{archive}: {e.name} cannot be inflated ({err}); the archive is damaged") from None
    except OSError as err:
        raise QueryError(f"cannot read {archive}: {err.strerror or err}") from None
    if size != e.file_size:
        raise QueryError(f"{archive}: {e.name} inflates to {size} bytes, not the {e.file_size} its zip entry "
                         f"declares (damaged)")
    if crc != e.crc:
        raise QueryError(f"{archive}: {e.name} fails its CRC-32 check (damaged)")


def _read(archive: Path, fh: io.BufferedReader, e: _Entry) -> bytes:
    """A small member whole (its declared size is already bounded)."""
    parts: list[bytes] = []
    _stream(archive, fh, e, parts.append)
    return b"".join(parts)


# ---- the manifest, checked field by field ----

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class _Manifest:
    rows: int
    files: dict[str, dict[str, object]]
    query: dict[str, object]
    signer: Ed25519PublicKey


_JSON_KIND = {str: "string", list: "array", dict: "object"}


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _manifest(archive: Path, body: bytes) -> _Manifest:
    def malformed(what: str) -> QueryError:
        return QueryError(f"{archive}: manifest.json is malformed ({what})")

    try:
        m = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise malformed(f"not JSON: {e}") from None
    if not isinstance(m, dict):
        raise malformed("not a JSON object")
    if m.get("format") != FORMAT:
        raise QueryError(f"{archive}: manifest.json is not a {FORMAT} manifest (format {m.get('format')!r})")
    for field, kind in (("created_at", str), ("created_by", dict), ("query", dict), ("files", dict),
                        ("sources", list), ("signer", dict)):
        if not isinstance(m.get(field), kind):
            raise malformed(f"{field!r} must be a JSON {_JSON_KIND[kind]}")
    if not _is_count(m.get("rows")):
        raise malformed("'rows' must be a non-negative integer")
    files = m["files"]
    if set(files) != set(RECORDS):
        raise malformed(f"'files' must name exactly {' and '.join(RECORDS)}, not {sorted(files)}")
    for name in RECORDS:
        d = files[name]
        if not (isinstance(d, dict) and isinstance(d.get("sha256"), str) and _SHA256.fullmatch(d["sha256"])
                and _is_count(d.get("bytes"))):
            raise malformed(f"files[{name!r}] must hold a hex 'sha256' and a byte count 'bytes'")
    if not all(isinstance(s, dict) for s in m["sources"]):
        raise malformed("'sources' must list JSON objects")
    signer = m["signer"]
    pem = signer.get("public_key_pem")
    if signer.get("algorithm") != "Ed25519" or not isinstance(pem, str) \
            or not isinstance(signer.get("fingerprint"), str):
        raise malformed("'signer' must give algorithm Ed25519, a fingerprint and a public_key_pem")
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, UnsupportedAlgorithm):
        raise malformed("the signer's public_key_pem is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise malformed("the signer's public_key_pem is not an Ed25519 key")
    if signer["fingerprint"] != fingerprint(key):
        raise malformed(f"the signer's fingerprint {signer['fingerprint']!r} is not that of its public_key_pem, "
                        f"{fingerprint(key)}")
    return _Manifest(rows=m["rows"], files=files, query=m["query"], signer=key)


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
