"""Forensic exports: signed archives that verify, and every kind of tampering caught."""

from __future__ import annotations

import base64
import io
import json
import zipfile

import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from query.cli import main as q
from query.export import fingerprint
from tests.conftest import fill_lake, lake_trace, write_config


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    config = write_config(tmp)
    fill_lake(tmp, config, rounds=2, lines=20)
    return tmp, config


def run(capsys, config, *argv) -> tuple[int, str, str]:
    rc = q(["--config", str(config), *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def rewrite(src, dst, change) -> None:
    """Copy a zip, passing each member's bytes through change(name, data)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = change(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)


def test_trace_export_holds_the_records_and_verifies(case, capsys):
    tmp, config = case
    out = tmp / "case.zip"
    trace = lake_trace(2)
    rc, text, err = run(capsys, config, "export", "--trace", trace, "--out", str(out))
    assert rc == 0, err
    z = zipfile.ZipFile(out)
    assert sorted(z.namelist()) == ["manifest.json", "manifest.sig", "records.jsonl", "records.parquet"]
    manifest = json.loads(z.read("manifest.json"))
    table = pq.read_table(io.BytesIO(z.read("records.parquet")))
    lines = [json.loads(x) for x in z.read("records.jsonl").splitlines()]
    assert table.num_rows == len(lines) == manifest["rows"] > 0
    assert set(table.column("trace_id").to_pylist()) == {trace} and {r["trace_id"] for r in lines} == {trace}
    assert manifest["query"]["filters"] == {"trace_id": trace} and "trace_id = ?" in manifest["query"]["sql"]
    assert manifest["sources"] and all(len(s["sha256"]) == 64 for s in manifest["sources"])
    assert f"exported {table.num_rows} records" in text and manifest["signer"]["fingerprint"] in text
    rc, text, _ = run(capsys, config, "verify-export", str(out))
    assert rc == 0 and f"intact, {table.num_rows} records, signed by {manifest['signer']['fingerprint']}" in text
    assert "checked only against" not in text  # the configured signing key was the trusted one


def test_time_window_export_needs_a_selector(case, capsys):
    _, config = case
    rc, _, err = run(capsys, config, "export", "--out", "x.zip")
    assert rc == 1 and "export needs --trace ID or --since TIME" in err
    rc, _, err = run(capsys, config, "export", "--since", "2026-11-20T23:00:00Z", "--until", "2026-11-20T23:05:00Z",
                     "--namespace", "pay", "--out", str(case[0] / "window.zip"))
    assert rc == 0, err
    assert {r["namespace"] for r in map(json.loads, zipfile.ZipFile(case[0] / "window.zip").read(
        "records.jsonl").splitlines())} == {"pay"}


def test_tampering_is_detected(case, capsys):
    tmp, config = case
    good = tmp / "good.zip"
    assert run(capsys, config, "export", "--trace", lake_trace(4), "--out", str(good))[0] == 0

    def flip(name, data):
        return data[:-2] + bytes([data[-2] ^ 1]) + data[-1:] if name == "records.jsonl" else data

    def drop_line(name, data):
        return b"\n".join(data.splitlines()[1:]) + b"\n" if name == "records.jsonl" else data

    other = Ed25519PrivateKey.generate()

    def resign(name, data):  # a forger rewrites the manifest and signs it with their own key
        if name == "manifest.json":
            m = json.loads(data)
            m["rows"] = 0
            m["signer"]["fingerprint"] = fingerprint(other.public_key())  # a consistent forger
            m["signer"]["public_key_pem"] = other.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
            resign.body = json.dumps(m).encode()
            return resign.body
        if name == "manifest.sig":
            return None
        return data

    cases = [(flip, "records.jsonl does not match the sha256 in the signed manifest"),
             (drop_line, "records.jsonl does not match the sha256 in the signed manifest"),
             (lambda n, d: None if n == "records.parquet" else d, "is not an intact loglake export")]
    for change, message in cases:
        bad = tmp / "bad.zip"
        rewrite(good, bad, change)
        rc, _, err = run(capsys, config, "verify-export", str(bad))
        assert rc == 1 and message in err, err
    forged = tmp / "forged.zip"
    rewrite(good, forged, resign)
    with zipfile.ZipFile(forged, "a") as z:
        z.writestr("manifest.sig", base64.b64encode(other.sign(resign.body)))
    rc, _, err = run(capsys, config, "verify-export", str(forged))
    assert rc == 1 and "manifest.json is not signed by the trusted key ed25519:" in err
    # without a trusted key the forgery is only self-consistent, and the output says so
    pub = tmp / "other.pem"
    pub.write_bytes(other.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    rc, text, _ = run(capsys, config, "verify-export", str(forged), "--public-key", str(pub))
    assert rc == 0 and "intact, 0 records" in text
