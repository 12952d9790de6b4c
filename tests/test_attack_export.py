"""Attacks on case archives: every one must fail with one sentence, within bounded time and memory.

Most tests build archives with ``export.write`` from a small table and attack ``export.verify``
directly; archives a zip library would never write (duplicates, lying sizes, hidden bytes) are
assembled byte by byte with ``raw_zip``. Two tests go through the CLI with a real lake.
"""

from __future__ import annotations

import base64
import json
import os
import random
import struct
import subprocess
import sys
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import orjson
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from query import export
from runtime.errors import QueryError
from schemas.record import LOG_SCHEMA
from tests.conftest import fill_lake, lake_trace, write_config

REPO = Path(__file__).resolve().parents[1]
GiB = 1 << 30


# ---- a small export to attack ----

def sample_table(n: int = 5) -> pa.Table:
    t0 = 1_795_215_600 * 10**9
    rows = [{"time": t0 + i, "observed_time": t0 + i, "severity_text": "info", "severity_number": 9,
             "body": f"line {i}", "trace_id": f"{i:032x}", "span_id": None, "attributes": None, "node": "node-a",
             "namespace": "shop", "pod": "web-1", "pod_uid": "u1", "container": "nginx", "container_id": None,
             "stream": "stdout", "source_id": "s1", "source_path": "/var/log/pods/x/0.log",
             "source_offset": 100 * i, "source_end": 100 * i + 99, "flags": 0} for i in range(n)]
    return pa.Table.from_pylist(rows, schema=LOG_SCHEMA)


QUERY = {"command": "loglake-query export --trace x", "filters": {}, "sql": "SELECT 1", "parameters": []}
SOURCES = [SimpleNamespace(tier="hot", path="hot/a.parquet", sha256="0" * 64, rows=5)]


@pytest.fixture(scope="module")
def signer() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def good(tmp_path_factory, signer) -> Path:
    out = tmp_path_factory.mktemp("attack") / "case.zip"
    export.write(out, sample_table(), QUERY, SOURCES, signer)
    return out


@pytest.fixture
def members(good) -> dict[str, bytes]:
    with zipfile.ZipFile(good) as z:
        return {n: z.read(n) for n in z.namelist()}


def pem(public) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def digest(data: bytes) -> dict[str, object]:
    import hashlib
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def signed(members: dict[str, bytes], key: Ed25519PrivateKey, change=None, *, embed=None) -> dict[str, bytes]:
    """The members with a rewritten manifest (digests recomputed, ``change(manifest)`` applied), signed by
    ``key`` and naming ``embed`` (default: ``key``'s public key) as the signer."""
    m = orjson.loads(members["manifest.json"])
    m["files"] = {n: digest(members[n]) for n in export.RECORDS}
    public = embed or key.public_key()
    m["signer"] = {"algorithm": "Ed25519", "fingerprint": export.fingerprint(public),
                   "public_key_pem": pem(public).decode()}
    if change:
        m = change(m)
    body = m if isinstance(m, bytes) else orjson.dumps(m, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    return {**members, "manifest.json": body, "manifest.sig": base64.b64encode(key.sign(body)) + b"\n"}


# ---- zips written byte by byte ----

@dataclass(frozen=True)
class M:
    """One member as stored: ``data`` is the stored (compressed) payload; the rest is what the headers say."""
    name: str | bytes
    data: bytes
    size: int
    crc: int
    method: int = zipfile.ZIP_DEFLATED
    flags: int = 0
    mode: int = 0o100600
    local_name: bytes | None = None


def deflated(name: str, content: bytes) -> M:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return M(name, c.compress(content) + c.flush(), len(content), zlib.crc32(content))


def stored(name: str, content: bytes) -> M:
    return M(name, content, len(content), zlib.crc32(content), method=zipfile.ZIP_STORED)


def plain(members: dict[str, bytes]) -> list[M]:
    return [deflated(n, members[n]) for n in export.ORDER]


def raw_zip(entries: list[M], *, prefix: bytes = b"", gap: bytes = b"", trailer: bytes = b"",
            comment: bytes = b"", offsets: dict[int, int] | None = None) -> bytes:
    """A zip of exactly these entries (no checks). ``gap`` goes between the last member and the directory;
    ``offsets`` overrides the directory's local-header offset of entry i."""
    out = bytearray(prefix)
    central = bytearray()
    for i, e in enumerate(entries):
        name = e.name.encode() if isinstance(e.name, str) else e.name
        local_name = name if e.local_name is None else e.local_name
        big = e.size >= 0xFFFFFFFF
        usize = 0xFFFFFFFF if big else e.size
        extra = struct.pack("<HHQ", 1, 8, e.size) if big else b""
        offset = len(out)
        out += struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 45 if big else 20, 0, e.flags, e.method, 0, 0x21, e.crc,
                           len(e.data), usize, len(local_name), len(extra)) + local_name + extra + e.data
        central += struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 45 if big else 20, 3, 45 if big else 20, 0, e.flags,
                               e.method, 0, 0x21, e.crc, len(e.data), usize, len(name), len(extra), 0, 0, 0,
                               e.mode << 16, (offsets or {}).get(i, offset)) + name + extra
    out += gap
    cd_offset = len(out)
    out += central
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), cd_offset,
                       len(comment)) + comment + trailer
    return bytes(out)


def save(tmp_path: Path, data: bytes, name: str = "attack.zip") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def refused(path: Path, trusted, fragment: str, **kw) -> str:
    with pytest.raises(QueryError) as e:
        export.verify(path, trusted, **kw)
    message = str(e.value)
    assert fragment in message, message
    assert "\n" not in message and message.count(". ") == 0, message  # one sentence
    return message


def zeros_bomb(gib: int) -> bytes:
    """A raw deflate stream of ``gib`` GiB of zeros in about gib MB: one 1 MiB segment, flushed so it
    stands alone, repeated, then an empty final block."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return segment * (gib * 1024) + b"\x03\x00"


def isolated(tmp_path: Path, archive: Path, key_pem: Path | None, **kw) -> dict:
    """Run verify in a fresh interpreter with an empty HOME and working directory and no LOGLAKE_*
    variables (no lake, no configuration); returns its message, time and peak memory growth."""
    script = r"""
import json, resource, sys, time
from pathlib import Path
from runtime.errors import QueryError
from query.export import load_public_key, verify
archive, key, kw = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
trusted = load_public_key(Path(key)) if key else None
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.monotonic()
try:
    v = verify(Path(archive), trusted, **kw)
    result = {"ok": True, "rows": v.rows, "signer": v.signer, "trusted": v.trusted}
except QueryError as e:
    result = {"ok": False, "message": str(e)}
result["seconds"] = time.monotonic() - t
result["rss_growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps(result))
"""
    home = tmp_path / "elsewhere"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGLAKE")}
    env.update(HOME=str(home), PYTHONPATH=str(REPO), XDG_CONFIG_HOME=str(home / ".config"))
    p = subprocess.run([sys.executable, "-c", script, str(archive), str(key_pem or ""), json.dumps(kw)],
                       cwd=home, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


# ---- (f) the genuine archive ----

def test_genuine_archive_verifies_against_the_signers_key(good, signer):
    v = export.verify(good, signer.public_key())
    assert v == export.Verified(rows=5, signer=export.fingerprint(signer.public_key()), trusted=True, query=QUERY)
    with zipfile.ZipFile(good) as z:  # written in a fixed order, as plain regular files
        infos = z.infolist()
    assert [i.filename for i in infos] == list(export.ORDER)
    assert all(i.compress_type == zipfile.ZIP_DEFLATED and i.external_attr >> 16 == 0o100600 for i in infos)
    assert len({i.date_time for i in infos}) == 1


def test_verify_needs_only_the_archive_and_a_public_key(tmp_path, good, signer):
    """Another machine: the archive and signer.pem in an empty directory, no lake, no config."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    archive = elsewhere / "case.zip"
    archive.write_bytes(good.read_bytes())
    key = elsewhere / "signer.pem"
    key.write_bytes(pem(signer.public_key()))
    r = isolated(tmp_path, archive, key)
    assert r["ok"] and r["rows"] == 5 and r["trusted"], r
    assert r["signer"] == export.fingerprint(signer.public_key())
    assert sorted(os.listdir(elsewhere)) == ["case.zip", "signer.pem"]  # nothing created on the way


def test_without_a_key_the_embedded_one_counts_only_when_asked(good, signer):
    message = refused(good, None, "is signed only by the key inside it")
    assert "--public-key" in message and "--trust-embedded-key to check integrity only" in message
    v = export.verify(good, None, trust_embedded=True)
    assert v.rows == 5 and not v.trusted and v.signer == export.fingerprint(signer.public_key())
    # a trusted key wins over trust_embedded
    assert export.verify(good, signer.public_key(), trust_embedded=True).trusted


# ---- (d) a re-signed forgery ----

def test_resigned_forgery(tmp_path, members, signer):
    forger = Ed25519PrivateKey.generate()
    altered = {**members, "records.jsonl": b"".join(members["records.jsonl"].splitlines(keepends=True)[1:])}
    forged = save(tmp_path, raw_zip(plain(signed(altered, forger, lambda m: {**m, "rows": 4}))))
    refused(forged, None, "is signed only by the key inside it")
    v = export.verify(forged, None, trust_embedded=True)  # self-consistent: integrity only, and it says so
    assert v.rows == 4 and not v.trusted and v.signer == export.fingerprint(forger.public_key())
    refused(forged, signer.public_key(),
            f"manifest.json is not signed by the trusted key {export.fingerprint(signer.public_key())}")
    refused(forged, signer.public_key(), "not signed by the trusted key", trust_embedded=True)


def test_embedded_signer_must_be_the_trusted_key(tmp_path, members, signer):
    other = Ed25519PrivateKey.generate()
    # signed with the real key but naming another signer: the manifest lies about who signed it
    lying = save(tmp_path, raw_zip(plain(signed(members, signer, embed=other.public_key()))))
    refused(lying, signer.public_key(), f"names {export.fingerprint(other.public_key())} as its signer")
    # naming a fingerprint that is not its own key's
    wrong_fp = signed(members, signer, lambda m: {**m, "signer": {**m["signer"], "fingerprint": "ed25519:" + "0" * 32}})
    refused(save(tmp_path, raw_zip(plain(wrong_fp))), signer.public_key(), "is not that of its public_key_pem")


# ---- (e) altered records ----

def test_flipped_byte_in_records_parquet(tmp_path, members, signer):
    pq_bytes = bytearray(members["records.parquet"])
    pq_bytes[len(pq_bytes) // 2] ^= 0x01
    bad = save(tmp_path, raw_zip(plain({**members, "records.parquet": bytes(pq_bytes)})))
    refused(bad, signer.public_key(), "records.parquet does not match the sha256 in the signed manifest")
    refused(bad, None, "does not match the sha256", trust_embedded=True)


def test_flipped_byte_in_the_stored_data(tmp_path, good, signer):
    raw = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as z:
        info = z.getinfo("records.parquet")
    raw[info.header_offset + 30 + len("records.parquet") + info.compress_size // 2] ^= 0x10
    message = refused(save(tmp_path, bytes(raw)), signer.public_key(), "records.parquet")
    assert any(w in message for w in ("damaged", "does not match the sha256")), message


# ---- (a) duplicates and (b) the member list ----

@pytest.mark.parametrize("forged_first", [True, False])
def test_duplicate_member(tmp_path, members, signer, forged_first):
    forgery = deflated("records.jsonl", b'{"body":"nothing happened"}\n')
    entries = plain(members)
    entries = [forgery, *entries] if forged_first else [*entries, forgery]
    dup = save(tmp_path, raw_zip(entries))
    refused(dup, signer.public_key(), "holds more than one member named 'records.jsonl'")
    refused(dup, None, "more than one member named 'records.jsonl'", trust_embedded=True)


def patched(data: bytes, at: int, fmt: str, value: int) -> bytes:
    """``data`` with the integer at ``at`` (negative: from the end) replaced."""
    at %= len(data)
    return data[:at] + struct.pack(fmt, value) + data[at + struct.calcsize(fmt):]


def structure_cases(members: dict[str, bytes]) -> list[tuple[str, bytes, str]]:
    e = plain(members)
    parquet, jsonl, manifest, sig = e
    whole = raw_zip(e)
    last_entry = len(whole) - 22 - (46 + len("manifest.sig"))
    return [
        ("extra member", raw_zip([*e, deflated("notes.txt", b"x")]), "unexpected member 'notes.txt'"),
        ("missing member", raw_zip([parquet, manifest, sig]), "it lacks records.jsonl"),
        ("directory", raw_zip([deflated("records/", b""), *e]), "directory entry 'records/'"),
        ("directory by mode", raw_zip([*e, replace(stored("evidence", b""), mode=0o40755)]), "directory entry"),
        ("parent path", raw_zip([deflated("../records.jsonl", members["records.jsonl"]), *e]),
         "member '../records.jsonl' has a path component"),
        ("absolute path", raw_zip([*e[:3], replace(sig, name="/tmp/manifest.sig")]), "has a path component"),
        ("subdirectory", raw_zip([*e, deflated("a/records.jsonl", b"")]), "has a path component"),
        ("backslash", raw_zip([*e, deflated("..\\x", b"")]), "has a path component"),
        ("NUL in the name", raw_zip([parquet, replace(jsonl, name=b"records.jsonl\0.txt"), manifest, sig]),
         "member 'records.jsonl\\x00.txt' has a control character in its name"),
        ("newline in the name", raw_zip([*e, deflated("x\nrecords.jsonl", b"")]), "has a control character"),
        ("symlink", raw_zip([parquet, replace(jsonl, mode=0o120777), manifest, sig]),
         "is not a plain stored or deflated file"),
        ("encrypted", raw_zip([parquet, replace(jsonl, flags=0x1), manifest, sig]), "is not a plain stored"),
        ("data descriptor", raw_zip([parquet, replace(jsonl, flags=0x8), manifest, sig]), "is not a plain stored"),
        ("bzip2", raw_zip([parquet, replace(jsonl, method=zipfile.ZIP_BZIP2), manifest, sig]), "compression 12"),
        ("stored size lie", raw_zip([parquet, replace(stored("records.jsonl", members["records.jsonl"]), size=3),
                                     manifest, sig]), "stored member 'records.jsonl' declares 3 bytes"),
        ("bytes before", raw_zip(e, prefix=b"MZ" + bytes(100)), "bytes precede member 'records.parquet'"),
        ("bytes between", raw_zip(e, gap=b"PK\x03\x04 hidden"), "bytes hide between its last member"),
        ("bytes after", raw_zip(e, trailer=b"junk"), "bytes follow its zip directory"),
        ("comment", raw_zip(e, comment=b"see the real evidence elsewhere"), "bytes follow its zip directory"),
        ("local name differs", raw_zip([parquet, replace(jsonl, local_name=b"records.jsonX"), manifest, sig]),
         "local header of member 'records.jsonl' disagrees"),
        ("overlapping members", raw_zip(e, offsets={1: 0}), "member 'records.jsonl' overlaps the one before it"),
        ("entry count", patched(whole, -22 + 10, "<H", 5), "end-of-directory record does not describe its 4"),
        ("comment length", patched(whole, -2, "<H", 9), "end-of-directory record does not describe"),
        ("name overruns the directory", patched(whole, last_entry + 28, "<H", 13),
         "its zip directory entries do not fill the directory exactly"),
        ("entry comment", patched(whole, last_entry + 32, "<H", 1), "carries a comment or a disk number"),
        ("not a zip", b"hello", "cannot be read as a zip archive"),
        ("empty zip", raw_zip([]), "it lacks records.parquet, records.jsonl, manifest.json, manifest.sig"),
        ("truncated", raw_zip(e)[:-30], "zip archive"),
        ("name bytes", raw_zip([*e[:3], replace(sig, name=b"\xff\xfe")]), "unexpected member"),
        ("bad UTF-8 name", raw_zip([*e[:3], replace(sig, name=b"\xff\xfe", flags=0x800)]), "zip archive"),
    ]


def test_member_list_must_be_exactly_the_four_plain_files(tmp_path, members, signer):
    for label, data, fragment in structure_cases(members):
        path = save(tmp_path, data)
        with pytest.raises(QueryError) as e:
            export.verify(path, signer.public_key())
        assert fragment in str(e.value), (label, str(e.value))
        assert "\n" not in str(e.value)


def test_not_a_regular_file(tmp_path, signer):
    refused(tmp_path, signer.public_key(), "")
    refused(Path("/dev/zero"), signer.public_key(), "is not a regular file")
    refused(tmp_path / "missing.zip", signer.public_key(), "cannot read")


# ---- (c) zip bombs ----

def test_zip_bomb_that_lies_about_its_size(tmp_path, members, signer):
    """records.jsonl declares (and the signed manifest says) its real size, but inflates to 3 GiB of zeros."""
    real = members["records.jsonl"]
    bomb = M("records.jsonl", zeros_bomb(3), len(real), zlib.crc32(real))
    e = plain(members)
    archive = save(tmp_path, raw_zip([e[0], bomb, *e[2:]]))
    assert archive.stat().st_size < 4 << 20
    key = tmp_path / "signer.pem"
    key.write_bytes(pem(signer.public_key()))
    r = isolated(tmp_path, archive, key)
    assert not r["ok"] and f"records.jsonl inflates past the {len(real)} bytes its zip entry declares" in r["message"]
    assert r["seconds"] < 2 and r["rss_growth_mb"] < 200, r


def test_zip_bomb_that_declares_its_size(tmp_path, members, signer):
    """The same bomb declaring 3 GiB: the signed manifest says otherwise; a forger's own manifest agreeing
    with it meets the size bound instead (default bound: a 5 GiB declaration)."""
    e = plain(members)
    bomb = M("records.jsonl", zeros_bomb(3), 3 * GiB, 0)
    key = tmp_path / "signer.pem"
    key.write_bytes(pem(signer.public_key()))
    archive = save(tmp_path, raw_zip([e[0], bomb, *e[2:]]), "declared.zip")
    r = isolated(tmp_path, archive, key)
    assert not r["ok"] and f"its zip entry declares {3 * GiB} bytes, the manifest {len(members['records.jsonl'])}" \
        in r["message"], r
    assert r["seconds"] < 2 and r["rss_growth_mb"] < 200, r

    forger = Ed25519PrivateKey.generate()
    for gib, kw, fragment in ((3, {"max_bytes": GiB}, f"over the {GiB}-byte verification limit"),
                              (5, {}, f"over the {export.DEFAULT_MAX_BYTES}-byte verification limit")):
        def claim(m, gib=gib):
            m["files"]["records.jsonl"] = {"sha256": "0" * 64, "bytes": gib * GiB}
            return m
        forged = signed(members, forger, claim)
        entries = [e[0], replace(bomb, size=gib * GiB), deflated("manifest.json", forged["manifest.json"]),
                   deflated("manifest.sig", forged["manifest.sig"])]
        archive = save(tmp_path, raw_zip(entries), f"forged{gib}.zip")
        r = isolated(tmp_path, archive, None, trust_embedded=True, **kw)
        assert not r["ok"] and fragment in r["message"] and "zip bomb" in r["message"], r
        assert r["seconds"] < 2 and r["rss_growth_mb"] < 200, r


def test_huge_manifest_or_signature_is_refused_before_reading(tmp_path, members, signer):
    e = plain(members)
    big_manifest = M("manifest.json", zeros_bomb(1), GiB, 0)
    refused(save(tmp_path, raw_zip([*e[:2], big_manifest, e[3]])), signer.public_key(),
            f"manifest.json declares {GiB} bytes, over the {export.MAX_MANIFEST_BYTES}")
    big_sig = deflated("manifest.sig", b"A" * 2000)
    refused(save(tmp_path, raw_zip([*e[:3], big_sig])), signer.public_key(), "manifest.sig declares 2000 bytes")
    # a manifest that lies small and inflates big is stopped at its declared size
    liar = replace(big_manifest, size=len(members["manifest.json"]))
    refused(save(tmp_path, raw_zip([*e[:2], liar, e[3]])), signer.public_key(), "manifest.json inflates past")


def test_huge_zip_directory_is_refused_before_parsing(tmp_path, members, signer):
    e = plain(members)
    many = [stored(f"f{i:05d}", b"") for i in range(3000)]
    message = refused(save(tmp_path, raw_zip([*e, *many])), signer.public_key(), "its zip directory takes")
    assert f"more than {export.MAX_DIRECTORY_BYTES}" in message


def test_short_or_padded_deflate_streams(tmp_path, members, signer):
    e = plain(members)
    manifest = e[2]  # (a record file's size must also match the signed manifest, checked before it is read)
    cases = [(replace(manifest, size=manifest.size + 1), "manifest.json inflates to"),  # declares more than it holds
             (replace(manifest, data=manifest.data + b"hidden"), "bytes hidden after it"),
             (replace(manifest, data=manifest.data[:-3]), "manifest.json"),
             (replace(manifest, crc=manifest.crc ^ 1), "manifest.json fails its CRC-32 check"),
             (replace(manifest, data=b"\xff" * 50), "manifest.json cannot be inflated")]
    for entry, fragment in cases:
        refused(save(tmp_path, raw_zip([*e[:2], entry, e[3]])), signer.public_key(), fragment)


# ---- the manifest's own structure ----

def malformed_manifests() -> list[tuple[str, object, str]]:
    def edit(**fields):
        return lambda m: {**m, **fields}

    def files(f):
        return lambda m: {**m, "files": f(m["files"])}

    return [
        ("not JSON", lambda m: b"{not json", "manifest.json is malformed (not JSON"),
        ("array", lambda m: b"[1, 2]", "not a JSON object"),
        ("invalid UTF-8", lambda m: b'{"format": "\xff"}', "not JSON"),
        ("format", edit(format="loglake-export/9"), "is not a loglake-export/1 manifest"),
        ("rows text", edit(rows="5"), "'rows' must be a non-negative integer"),
        ("rows bool", edit(rows=True), "'rows' must be a non-negative integer"),
        ("rows negative", edit(rows=-1), "'rows' must be a non-negative integer"),
        ("rows float", edit(rows=5.0), "'rows' must be a non-negative integer"),
        ("query list", edit(query=["x"]), "'query' must be a JSON object"),
        ("files list", edit(files=[]), "'files' must be a JSON object"),
        ("files missing one", files(lambda f: {"records.jsonl": f["records.jsonl"]}), "'files' must name exactly"),
        ("files extra", files(lambda f: {**f, "../x": f["records.jsonl"]}), "'files' must name exactly"),
        ("sha256 short", files(lambda f: {**f, "records.jsonl": {**f["records.jsonl"], "sha256": "ab"}}),
         "files['records.jsonl'] must hold"),
        ("sha256 upper", files(lambda f: {**f, "records.jsonl": {**f["records.jsonl"],
                                                                 "sha256": f["records.jsonl"]["sha256"].upper()}}),
         "must hold a hex 'sha256'"),
        ("bytes text", files(lambda f: {**f, "records.parquet": {**f["records.parquet"], "bytes": "9"}}),
         "files['records.parquet'] must hold"),
        ("digest not object", files(lambda f: {**f, "records.parquet": "abc"}), "files['records.parquet'] must hold"),
        ("sources", edit(sources={"a": 1}), "'sources' must be a JSON array"),
        ("source item", edit(sources=[1]), "'sources' must list JSON objects"),
        ("created_at", edit(created_at=0), "'created_at' must be a JSON string"),
        ("signer", edit(signer="me"), "'signer' must be a JSON object"),
        ("no pem", lambda m: {**m, "signer": {**m["signer"], "public_key_pem": None}}, "'signer' must give"),
        ("algorithm", lambda m: {**m, "signer": {**m["signer"], "algorithm": "RSA"}}, "'signer' must give"),
        ("bad pem", lambda m: {**m, "signer": {**m["signer"], "public_key_pem": "-----BEGIN nonsense"}},
         "the signer's public_key_pem is not a PEM public key"),
        ("EC key", lambda m: {**m, "signer": {**m["signer"], "public_key_pem": EC_PEM}},
         "the signer's public_key_pem is not an Ed25519 key"),
    ]


EC_PEM = pem(ec.generate_private_key(ec.SECP256R1()).public_key()).decode()


@pytest.mark.parametrize("label,change,fragment", malformed_manifests(), ids=lambda x: x if isinstance(x, str) else "")
def test_malformed_manifest_gives_one_sentence(tmp_path, members, signer, label, change, fragment):
    # signed by the trusted key, so the structure check itself is what answers
    archive = save(tmp_path, raw_zip(plain(signed(members, signer, change))))
    refused(archive, signer.public_key(), fragment)
    refused(archive, None, fragment, trust_embedded=True)


def test_bad_signature_member(tmp_path, members, signer):
    e = plain(members)
    for content in (b"not base64!\n", base64.b64encode(b"short") + b"\n", b""):
        refused(save(tmp_path, raw_zip([*e[:3], deflated("manifest.sig", content)])), signer.public_key(),
                "manifest.sig is not the base64 of an Ed25519 signature")


def test_random_damage_never_escapes_as_a_traceback(tmp_path, good, signer):
    raw = good.read_bytes()
    rng = random.Random(6)
    path = tmp_path / "damaged.zip"
    outcomes = {"ok": 0, "refused": 0}
    for i in range(600):
        data = bytearray(raw)
        if i % 10 == 0:
            data = data[:rng.randrange(len(data))]
        else:
            for _ in range(rng.choice((1, 1, 2, 8))):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        for kw in ({}, {"trust_embedded": True}):
            try:
                export.verify(path, signer.public_key() if not kw else None, **kw)
                outcomes["ok"] += 1  # the flip hit a field nothing depends on (a timestamp, a version)
            except QueryError as e:
                assert "\n" not in str(e)
                outcomes["refused"] += 1
    assert outcomes["refused"] > 1000, outcomes


# ---- through the CLI, with a real lake ----

@pytest.fixture(scope="module")
def lake_case(tmp_path_factory):
    from query.cli import main as q
    tmp = tmp_path_factory.mktemp("attack-cli")
    config = write_config(tmp)
    fill_lake(tmp, config, rounds=1, lines=10)
    out = tmp / "case.zip"
    assert q(["--config", str(config), "export", "--trace", lake_trace(2), "--out", str(out)]) == 0
    key = export.load_signing_key(tmp / "lake" / "keys" / "export-signing.key", create=False)
    pub = tmp / "signer.pem"
    pub.write_bytes(pem(key.public_key()))
    return tmp, config, out, pub


def cli(capsys, config, *argv) -> tuple[int, str, str]:
    from query.cli import main as q
    capsys.readouterr()
    rc = q(["--config", str(config), *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_refuses_a_duplicate_forged_first(lake_case, capsys):
    tmp, config, out, pub = lake_case
    with zipfile.ZipFile(out) as z:
        members = {n: z.read(n) for n in z.namelist()}
    rc, text, err = cli(capsys, config, "verify-export", str(out), "--public-key", str(pub))
    assert rc == 0 and "intact" in text, err
    dup = tmp / "dup.zip"
    dup.write_bytes(raw_zip([deflated("records.jsonl", b'{"body":"forged"}\n'), *plain(members)]))
    rc, text, err = cli(capsys, config, "verify-export", str(dup), "--public-key", str(pub))
    assert rc == 1 and "more than one member named 'records.jsonl'" in err and "Traceback" not in err, err


def test_cli_refuses_bad_member_lists(lake_case, capsys):
    tmp, config, out, pub = lake_case
    with zipfile.ZipFile(out) as z:
        members = {n: z.read(n) for n in z.namelist()}
    e = plain(members)
    for data, fragment in ((raw_zip([*e, deflated("extra.txt", b"")]), "unexpected member 'extra.txt'"),
                           (raw_zip(e[1:]), "it lacks records.parquet"),
                           (raw_zip([deflated("dir/", b""), *e]), "directory entry 'dir/'"),
                           (raw_zip([*e, deflated("../x", b"")]), "member '../x' has a path component")):
        bad = tmp / "bad.zip"
        bad.write_bytes(data)
        rc, _, err = cli(capsys, config, "verify-export", str(bad), "--public-key", str(pub))
        assert rc == 1 and fragment in err, err


def test_cli_verifies_on_another_machine_with_only_the_archive_and_the_public_key(lake_case, capsys, tmp_path,
                                                                                 monkeypatch):
    """The issue's case: 'verify-export --public-key signer.pem' elsewhere said "there is no catalog"."""
    from query.cli import main as q
    _, _, out, pub = lake_case
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "case.zip").write_bytes(out.read_bytes())
    (elsewhere / "signer.pem").write_bytes(pub.read_bytes())
    monkeypatch.chdir(elsewhere)
    for k in [k for k in os.environ if k.startswith("LOGLAKE_")]:
        monkeypatch.delenv(k)
    assert q(["verify-export", "case.zip", "--public-key", "signer.pem"]) == 0
    text = capsys.readouterr().out
    assert "case.zip: intact" in text and "integrity only" not in text
    # with no key to trust, a forger's re-signed archive would look the same: refused, exit 1
    assert q(["verify-export", "case.zip"]) == 1
    assert "is signed only by the key inside it" in capsys.readouterr().err
    assert q(["verify-export", "case.zip", "--trust-embedded-key"]) == 0
    assert "integrity only" in capsys.readouterr().out
    assert sorted(p.name for p in elsewhere.iterdir()) == ["case.zip", "signer.pem"]  # nothing created


def test_cli_export_leaves_the_public_key_beside_the_signing_key(lake_case):
    tmp, _, _, _ = lake_case
    pub = tmp / "lake" / "keys" / "export-signing.pub.pem"
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
