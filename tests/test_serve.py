"""loglake-query serve through the real thing: the service as its own process over TLS, real tokens,
client certificates and JWTs, the real encrypted lake, every access read back from the audit trail.

The lake (conftest.fill_lake): namespaces shop (nginx) and pay (app) on two nodes, traces spanning both.
Roles: alice (token) and carol (certificate) read shop; bob reads pay's errors; dave holds a role without
grants; eve has a token and no role; the JWT group sre reads everything."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import hmac
import json
import os
import queue
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import query
from aggregator import certs
from tests.conftest import LAKE_START, fill_lake, lake_trace, write_config

START_NS = LAKE_START * 10**9
END_NS = (LAKE_START + 4 * 3600) * 10**9
WINDOW = {"start": str(START_NS), "end": str(END_NS)}


@dataclass
class Served:
    url: str
    config: Path
    tokens: dict[str, str]
    certs: Path
    proc: subprocess.Popen
    jwt_key: rsa.RSAPrivateKey
    audit: Path

    def context(self, cert: str | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        if cert:
            ctx.load_cert_chain(str(self.certs / f"{cert}.crt"), str(self.certs / f"{cert}.key"))
        return ctx

    def get(self, path: str, params: dict | None = None, *, token: str | None = None, cert: str | None = None,
            bearer: str | None = None, data: bytes | None = None) -> tuple[int, bytes]:
        url = self.url + path + ("?" + urllib.parse.urlencode(params, doseq=True) if params else "")
        req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
        if token:
            req.add_header("Authorization", f"Bearer {self.tokens[token]}")
        if bearer:
            req.add_header("Authorization", bearer)
        try:
            with urllib.request.urlopen(req, context=self.context(cert), timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def json(self, path: str, params: dict | None = None, **kw: object) -> dict:
        status, body = self.get(path, params, **kw)  # type: ignore[arg-type]
        assert status == 200, body
        return json.loads(body)

    def entries(self, action: str = "access") -> list[dict]:
        text = self.audit.read_text() if self.audit.exists() else ""
        return [e for e in map(json.loads, text.splitlines()) if e["action"] == action]


def _issue(out: Path, name: str, ca_cert, ca_key, *, server: bool = False) -> None:
    cert, key = certs.issue(ca_cert, ca_key, name, server=server)
    (out / f"{name}.crt").write_bytes(certs._pem_cert(cert))
    (out / f"{name}.key").write_bytes(certs._pem_key(key))


def _toml(v: object) -> str:
    return json.dumps(v) if not isinstance(v, list) else "[" + ", ".join(map(_toml, v)) + "]"


ROLES = [
    ("shop-reader", ["read"], ["token:alice", "cert:carol", "token:tina"], [{"namespace": "shop"}]),
    ("pay-errors", ["read"], ["token:bob"], [{"namespace": "pay", "levels": "error"}]),
    ("nothing", ["read"], ["token:dave"], []),
    ("sre", ["read"], ["group:sre"], [{"namespace": "*"}]),
    ("shop-sql", ["sql", "export"], ["token:alice"], [{"namespace": "shop"}]),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Served:
    tmp = tmp_path_factory.mktemp("serve")
    config = write_config(tmp)
    fill_lake(tmp, config, rounds=2, lines=40)
    pki = tmp / "pki"
    pki.mkdir()
    ca_cert, ca_key = certs.make_ca()
    (pki / "ca.crt").write_bytes(certs._pem_cert(ca_cert))
    _issue(pki, "localhost", ca_cert, ca_key, server=True)
    _issue(pki, "carol", ca_cert, ca_key)
    other_cert, other_key = certs.make_ca("another CA")
    _issue(pki, "mallory", other_cert, other_key)     # a certificate the service's CA never signed
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    (tmp / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    lines = ["", "[serve]", 'listen = "127.0.0.1:0"', f"tls_cert_file = {_toml(str(pki / 'localhost.crt'))}",
             f"tls_key_file = {_toml(str(pki / 'localhost.key'))}", f"client_ca_file = {_toml(str(pki / 'ca.crt'))}",
             f"jwks_file = {_toml(str(tmp / 'jwks.json'))}", 'jwt_issuer = "https://idp.example"',
             'jwt_audience = "loglake"', "max_limit = 500", "max_body_bytes = 65536", "max_tail_connections = 3",
             "sql_max_rows = 50", "sql_timeout_s = 2", "tail_recheck_s = 1"]
    for name, permissions, members, grants in ROLES:
        lines += ["", "[[serve.roles]]", f"name = {_toml(name)}", f"permissions = {_toml(permissions)}",
                  f"members = {_toml(members)}"]
        for g in grants:
            lines += ["[[serve.roles.grants]]", *(f"{k} = {_toml(v)}" for k, v in g.items())]
    with config.open("a") as f:
        f.write("\n".join(lines) + "\n")
    tokens = {}
    for name in ("alice", "bob", "dave", "eve", "tina"):
        out = subprocess.run([sys.executable, "-m", "query.cli", "--config", str(config), "token", "create", name],
                             capture_output=True, text=True, check=True)
        tokens[name] = out.stdout.strip()
    proc = subprocess.Popen([sys.executable, "-m", "query.cli", "--config", str(config), "serve"],
                            stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    assert "listening on https://" in line, line + proc.stderr.read()
    served = Served(line.split("listening on ")[1].strip(), config, tokens, pki, proc, key, tmp / "lake" / "audit" /
                    "audit.jsonl")
    yield served
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _lines(doc: dict) -> list[tuple[dict, str, str]]:
    assert doc["status"] == "success" and doc["data"]["resultType"] == "streams"
    return [(s["stream"], ts, line) for s in doc["data"]["result"] for ts, line in s["values"]]


def _sql(config: Path, text: str) -> list[tuple]:
    return query.connect(str(config)).execute(text).fetchall()


def test_tokens_are_shown_once_and_stored_only_as_digests(served):
    stored = (served.config.parent / "lake" / "serve-tokens.json").read_text()
    assert all(t.startswith("llk_") and t not in stored for t in served.tokens.values())
    assert {t["name"] for t in orjson.loads(stored)["tokens"]} == {"alice", "bob", "dave", "eve", "tina"}
    assert oct(os.stat(served.config.parent / "lake" / "serve-tokens.json").st_mode & 0o777) == "0o600"
    again = subprocess.run([sys.executable, "-m", "query.cli", "--config", str(served.config), "token", "create",
                            "alice"], capture_output=True, text=True)
    assert again.returncode == 1 and "has a token already" in again.stderr and "Traceback" not in again.stderr


def test_only_https_is_spoken_and_health_and_metrics_answer(served):
    plain = served.url.replace("https://", "http://")
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(plain + "/healthz", timeout=10).read()
    assert served.get("/healthz") == (200, b"ok\n")
    status, body = served.get("/metrics")
    assert status == 200 and b"loglake_serve_requests_total" in body


@pytest.mark.parametrize("how", ["none", "unknown token", "basic", "garbage jwt"])
def test_a_missing_or_bad_credential_is_401_and_audited(served, how):
    bearer = {"none": None, "unknown token": "Bearer llk_notatokenatall", "basic": "Basic YWxpY2U6eA==",
              "garbage jwt": "Bearer eyJhbGciOi.x.y"}[how]
    before = len(served.entries())
    status, body = served.get("/loki/api/v1/labels", bearer=bearer)
    assert status == 401 and body.strip() and b"Traceback" not in body
    denied = served.entries()[before:]
    assert [(e["details"]["status"], e["details"]["endpoint"]) for e in denied] == [(401, "labels")]
    assert "identity" not in denied[0]["details"] and denied[0]["details"]["error"]


def test_a_grant_restricts_every_endpoint_to_its_rows(served):
    shop = _sql(served.config, "SELECT count(*) FROM logs WHERE namespace = 'shop'")[0][0]
    assert shop > 0
    got = _lines(served.json("/loki/api/v1/query_range", {"query": '{namespace=~".+"}', "limit": 500, **WINDOW},
                             token="alice"))
    assert len(got) == shop and {s["namespace"] for s, _, _ in got} == {"shop"}
    doc = served.json("/loki/api/v1/query_range", {"query": '{namespace=~".+"}', "limit": 5, **WINDOW}, token="alice")
    newest = sorted((int(ts) for _, ts, _ in got), reverse=True)[:5]
    assert sorted((int(ts) for _, ts, _ in _lines(doc)), reverse=True) == newest      # backward: the newest
    for stream in doc["data"]["result"]:
        assert [int(ts) for ts, _ in stream["values"]] == sorted((int(ts) for ts, _ in stream["values"]), reverse=True)
    assert served.json("/loki/api/v1/label/namespace/values", WINDOW, token="alice")["data"] == ["shop"]
    assert served.json("/loki/api/v1/label/namespace/values", WINDOW, token="bob")["data"] == ["pay"]
    series = served.json("/loki/api/v1/series", {"match[]": '{container=~".+"}', **WINDOW}, token="alice")["data"]
    assert series and {s["namespace"] for s in series} == {"shop"}
    stats = served.json("/loki/api/v1/index/stats", {"query": '{namespace=~".+"}', **WINDOW}, token="alice")
    assert stats["entries"] == shop and stats["streams"] >= 1
    # pay's errors only, for bob
    pay_errors = _sql(served.config, "SELECT count(*) FROM logs WHERE namespace = 'pay' AND severity_number >= 17")
    got = _lines(served.json("/loki/api/v1/query_range", {"query": '{namespace=~".+"}', "limit": 500, **WINDOW},
                             token="bob"))
    assert len(got) == pay_errors[0][0] > 0 and {(s["namespace"], s["level"]) for s, _, _ in got} == {("pay", "error")}
    # a role without grants reads nothing
    assert _lines(served.json("/loki/api/v1/query_range", {"query": '{namespace=~".+"}', **WINDOW},
                              token="dave")) == []


def test_a_trace_across_namespaces_shows_only_the_granted_lines(served):
    tid = lake_trace(2)
    every = _sql(served.config, f"SELECT namespace, count(*) FROM logs WHERE trace_id = '{tid}' GROUP BY ALL")
    assert {ns for ns, _ in every} == {"shop", "pay"}
    got = _lines(served.json("/loki/api/v1/query_range", {"query": f'{{namespace=~".+"}} | trace_id="{tid}"',
                                                           "limit": 500, **WINDOW}, token="alice"))
    assert len(got) == dict(every)["shop"] and {s["namespace"] for s, _, _ in got} == {"shop"}


def test_no_role_is_403_and_audited(served):
    before = len(served.entries())
    status, body = served.get("/loki/api/v1/query_range", {"query": '{namespace="shop"}'}, token="eve")
    assert status == 403 and b"may not read" in body
    [entry] = served.entries()[before:]
    assert entry["details"]["identity"] == "token:eve" and entry["details"]["status"] == 403


def test_a_client_certificate_is_an_identity_and_one_from_another_ca_is_refused(served):
    got = _lines(served.json("/loki/api/v1/query_range", {"query": '{namespace=~".+"}', "limit": 500, **WINDOW},
                             cert="carol"))
    assert got and {s["namespace"] for s, _, _ in got} == {"shop"}
    assert served.entries()[-1]["details"]["identity"] == "cert:carol"
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError, OSError)):
        served.get("/loki/api/v1/labels", cert="mallory")
    assert served.get("/healthz") == (200, b"ok\n")   # still serving


def _jwt(served: Served, **claims: object) -> str:
    body = {"iss": "https://idp.example", "aud": "loglake", "sub": "sam@example", "groups": ["sre"],
            "exp": int(time.time()) + 300, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, served.jwt_key, algorithm="RS256",
                      headers={"kid": "k1"})


def test_a_jwt_from_the_configured_issuer_maps_its_groups_to_roles(served):
    doc = served.json("/loki/api/v1/label/namespace/values", WINDOW, bearer=f"Bearer {_jwt(served)}")
    assert doc["data"] == ["pay", "shop"]
    entry = served.entries()[-1]["details"]
    assert (entry["identity"], entry["auth"], entry["groups"]) == ("jwt:sam@example", "jwt", ["sre"])


@pytest.mark.parametrize("bad", ["expired", "audience", "issuer", "none", "hmac with the public key", "other key",
                                 "groups not a list"])
def test_a_jwt_that_does_not_verify_is_401(served, bad):
    if bad == "expired":
        token = _jwt(served, exp=int(time.time()) - 10)
    elif bad == "audience":
        token = _jwt(served, aud="someone-else")
    elif bad == "issuer":
        token = _jwt(served, iss="https://evil.example")
    elif bad == "none":
        token = jwt.encode({"iss": "https://idp.example", "aud": "loglake", "sub": "x", "groups": ["sre"],
                            "exp": int(time.time()) + 300}, None, algorithm="none")
    elif bad == "hmac with the public key":
        # the classic confusion: HS256 keyed with the public key, forged by hand (PyJWT refuses to make it)
        pem = served.jwt_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
        def b64(b: bytes) -> str:
            return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
        signing = b64(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"})) + "." + b64(orjson.dumps(
            {"iss": "https://idp.example", "aud": "loglake", "sub": "x", "groups": ["sre"],
             "exp": int(time.time()) + 300}))
        token = signing + "." + b64(hmac.new(pem, signing.encode(), hashlib.sha256).digest())
    elif bad == "groups not a list":
        token = _jwt(served, groups=7)
    else:
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = jwt.encode({"iss": "https://idp.example", "aud": "loglake", "sub": "x", "groups": ["sre"],
                            "exp": int(time.time()) + 300}, other, algorithm="RS256", headers={"kid": "k1"})
    status, body = served.get("/loki/api/v1/labels", bearer=f"Bearer {token}")
    assert status == 401, body


def test_metric_queries_count_only_granted_rows(served):
    shop = _sql(served.config, "SELECT count(*) FROM logs WHERE namespace = 'shop'")[0][0]
    doc = served.json("/loki/api/v1/query_range", {"query": 'sum by (namespace) (count_over_time({namespace=~".+"}[1h]))',
                                                   "step": "3600", **WINDOW}, token="alice")
    assert doc["data"]["resultType"] == "matrix"
    [series] = doc["data"]["result"]
    assert series["metric"] == {"namespace": "shop"}
    # tumbling hours (range = step): each line counted once, in the hour ending at or after it
    assert sum(int(v) for _, v in series["values"]) == shop
    doc = served.json("/loki/api/v1/query", {"query": "vector(1)+vector(1)"}, token="alice")
    assert doc["data"]["resultType"] == "vector" and doc["data"]["result"][0]["value"][1] == "2"


@pytest.mark.parametrize("query, says", [
    ('{namespace="shop"', 'expected "," or "}"'),
    ('{namespace="shop"} | line_format "{{.x}}"', "line_format"),
    ('{namespace=~".*"}', "at least one"),
    ("topk(3, count_over_time({namespace=\"shop\"}[5m]))", "topk"),
])
def test_bad_logql_is_400_naming_the_part(served, query, says):
    status, body = served.get("/loki/api/v1/query_range", {"query": query, **WINDOW}, token="alice")
    assert status == 400 and says in body.decode() and b"Traceback" not in body


@pytest.mark.parametrize("params, says", [
    ({"query": 'count_over_time({namespace="shop"}[10y])', "step": "3600"}, "max_range_s"),
    ({"query": 'count_over_time({namespace="shop"}[1h])', "step": "0.001", "start": str(END_NS - 10**10)},
     "increase step"),
    ({"query": '{namespace="shop"}', "step": "inf"}, "not a usable number"),
    ({"query": "(" * 5000 + "vector(1)" + ")" * 5000}, "nests too deeply"),
    ({"query": '{namespace="shop"} | json | status > "500"'}, "a string compares with"),
    ({"query": '{namespace="shop"}', "start": "1" + "0" * 400 + ".5"}, "out of range"),
])
def test_costly_or_odd_requests_are_400(served, params, says):
    # as a form body, as Grafana posts long queries (a URL is cut at 8 KiB)
    status, body = served.get("/loki/api/v1/query_range", token="alice",
                              data=urllib.parse.urlencode({**WINDOW, **params}).encode())
    assert status == 400 and says in body.decode(), body


def test_a_json_filter_over_lines_that_are_not_json_finds_nothing_and_fails_nothing(served):
    doc = served.json("/loki/api/v1/query_range", {"query": '{namespace=~".+"} | json | status="500"', **WINDOW},
                      token="alice")
    assert _lines(doc) == []


def test_an_export_names_no_file_outside_the_grant(served, tmp_path):
    out = tmp_path / "pay.zip"
    p = _cli(served, "export", "-n", "pay", "--since", "all", "--grep", "app", "--out", str(out))
    assert p.returncode == 0, p.stderr
    with zipfile.ZipFile(out) as z:
        manifest = json.loads(z.read("manifest.json"))
    assert manifest["query"]["identity"] == "token:alice" and manifest["query"]["restricted_to"]
    assert manifest["records"] == 0 if "records" in manifest else True
    assert all("pay" not in json.dumps(src) for src in manifest["sources"]), manifest["sources"]


def test_an_open_tail_ends_when_its_token_is_revoked(served):
    async def run():
        url = served.url.replace("https://", "wss://") + "/loki/api/v1/tail?" + urllib.parse.urlencode(
            {"query": '{namespace="shop"}', "start": str(START_NS), "limit": 1})
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url, ssl=served.context(), headers={
                    "Authorization": f"Bearer {served.tokens['tina']}"}) as ws:
                assert (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.TEXT
                revoked = await asyncio.to_thread(subprocess.run, [
                    sys.executable, "-m", "query.cli", "--config", str(served.config), "token", "revoke", "tina"],
                    capture_output=True, text=True)
                assert revoked.returncode == 0, revoked.stderr
                started = time.monotonic()
                msg = await ws.receive(timeout=15)
                while msg.type == aiohttp.WSMsgType.TEXT:   # lines that landed meanwhile
                    msg = await ws.receive(timeout=15)
                return msg.type, msg.data, time.monotonic() - started   # a CLOSE frame carries its code
    kind, code, waited = asyncio.run(run())
    assert kind in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and code == 1008 and waited < 10
    def tinas() -> list[dict]:
        return [e["details"] for e in served.entries() if e["details"].get("identity") == "token:tina"]
    deadline = time.monotonic() + 10   # the service writes the closing entry once the socket is closed
    while [t.get("opened", False) for t in tinas()] != [True, False]:
        assert time.monotonic() < deadline, tinas()
        time.sleep(0.1)
    assert "grant changed" in tinas()[-1]["error"]


def test_a_page_elsewhere_cannot_open_a_tail(served):
    async def run():
        url = served.url.replace("https://", "wss://") + "/loki/api/v1/tail?" + urllib.parse.urlencode(
            {"query": '{namespace="shop"}', "start": str(START_NS)})
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(url, ssl=served.context(), headers={
                    "Authorization": f"Bearer {served.tokens['alice']}", "Origin": "https://evil.example"})
            return refused.value.status
    assert asyncio.run(run()) == 403


def test_limits_are_bounded_and_the_service_keeps_serving(served):
    status, body = served.get("/loki/api/v1/query_range", {"query": '{namespace="shop"}', "limit": 501, **WINDOW},
                              token="alice")
    assert status == 400 and b"max entries limit" in body
    status, body = served.get("/loki/api/v1/query_range", {"query": '{namespace="shop"}', "start": "0",
                                                           "end": str(END_NS)}, token="alice")
    assert status == 400 and b"time range exceeds the limit" in body
    status, _ = served.get("/loki/api/v1/query_range", token="alice", data=b"x" * (1 << 20))
    assert status == 413
    assert served.json("/loki/api/v1/label/namespace/values", WINDOW, token="alice")["data"] == ["shop"]


def test_every_access_is_audited_with_who_what_and_how_much(served):
    served.json("/loki/api/v1/query_range", {"query": '{namespace="shop"} |= "r1"', "limit": 7, **WINDOW},
                token="alice")
    entry = served.entries()[-1]["details"]
    assert entry["identity"] == "token:alice" and entry["auth"] == "token" and entry["endpoint"] == "query_range"
    assert entry["query"] == '{namespace="shop"} |= "r1"' and entry["selectors"] == [{"namespace": "shop"}]
    assert entry["status"] == 200 and entry["rows"] == 7 and entry["bytes"] > 0
    [q] = [e for e in served.entries("query") if e["details"].get("identity") == "token:alice"][-1:]
    assert q["details"]["command"] == "serve query_range"


def _sql_over_http(served: Served, text: str, token: str = "alice") -> tuple[int, dict | str]:
    status, body = served.get("/api/v1/sql", {"query": text, **WINDOW}, token=token)
    return status, (json.loads(body) if status == 200 else body.decode())


def test_sql_sees_only_the_granted_rows(served):
    shop = _sql(served.config, "SELECT count(*) FROM logs WHERE namespace = 'shop'")[0][0]
    status, doc = _sql_over_http(served, "SELECT namespace, count(*) AS n FROM logs GROUP BY ALL")
    assert status == 200 and doc["data"]["columns"] == ["namespace", "n"] and doc["data"]["rows"] == [["shop", shop]]
    # error() carrying data, and aggregates over "everything": only granted rows are there to carry
    status, text = _sql_over_http(served, "SELECT error(string_agg(DISTINCT container, ',')) FROM logs")
    assert status == 400 and "nginx" in text and "app" not in text
    status, doc = _sql_over_http(served, "SELECT body FROM logs WHERE namespace = 'pay'")
    assert status == 200 and doc["data"]["rows"] == []
    status, doc = _sql_over_http(served, "SELECT time FROM logs ORDER BY time DESC LIMIT 1")
    newest = _sql(served.config, "SELECT max(epoch_ns(time)) FROM logs WHERE namespace = 'shop'")[0][0]
    assert status == 200 and doc["data"]["rows"][0][0].endswith(f".{newest % 10**9:09d}Z")   # to the nanosecond
    status, text = _sql_over_http(served, "SELECT 1", token="bob")
    assert status == 403 and "may not sql" in text


def test_sql_cannot_escape_its_sandbox(served, tmp_path):
    f = query.connect(str(served.config))
    stored = f._lake.catalog.files()
    f.close()
    lake_file = served.config.parent / "lake" / stored[0].path
    assert lake_file.exists()
    attempts = {
        "read a lake file with its key's name": f"SELECT count(*) FROM read_parquet('{lake_file}', "
                                                 f"encryption_config={{footer_key: '{stored[0].key_id}'}})",
        "read_text": "SELECT * FROM read_text('/etc/passwd')",
        "glob": "SELECT * FROM glob('/**')",
        "getenv": "SELECT getenv('HOME')",
        "COPY TO": f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'",
        "ATTACH": f"ATTACH '{tmp_path / 'x.duckdb'}' AS x",
        "INSTALL": "INSTALL httpfs",
        "LOAD": "LOAD httpfs",
        "SET": "SET enable_external_access = true",
        "PRAGMA": "PRAGMA add_parquet_key('k', 'AAAAAAAAAAAAAAAAAAAAAA==')",
        "two statements": "SELECT 1; SELECT 2",
        "EXPLAIN ANALYZE": f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{tmp_path / 'out2.csv'}'",
    }
    for what, text in attempts.items():
        status, answer = _sql_over_http(served, text)
        assert status == 400, (what, answer)
        assert "Traceback" not in answer and answer.strip(), what
    assert list(tmp_path.iterdir()) == []
    assert served.get("/healthz") == (200, b"ok\n")


def test_sql_is_bounded_in_rows_and_time(served):
    status, doc = _sql_over_http(served, "SELECT * FROM range(100000)")
    assert status == 200 and len(doc["data"]["rows"]) == 50 and doc["data"]["truncated"] is True
    started = time.monotonic()
    status, text = _sql_over_http(served, "SELECT count(*) FROM range(100000000000) a, range(10) b")
    assert status == 400 and "ran longer than 2 s" in text and time.monotonic() - started < 20


def _cli(served: Served | None, *argv: str, token: str = "alice", timeout: float = 120) -> subprocess.CompletedProcess:
    """loglake-query locally (served is None: with the lake's config) or through the service (no config)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGLAKE_")}
    if served is None:
        raise AssertionError("give served")
    if token:
        env.update({"LOGLAKE_SERVER": served.url, "LOGLAKE_TOKEN": served.tokens[token],
                    "LOGLAKE_CACERT": str(served.certs / "ca.crt")})
        base = [sys.executable, "-m", "query.cli"]
    else:
        base = [sys.executable, "-m", "query.cli", "--config", str(served.config)]
    return subprocess.run([*base, *argv], capture_output=True, text=True, env=env, timeout=timeout)


def _json_lines(p: subprocess.CompletedProcess) -> list[dict]:
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


def test_the_cli_through_the_service_prints_what_it_prints_locally_of_the_granted_rows(served):
    local = _cli(served, "logs", "-n", "shop", "--since", "all", "--limit", "500", "-o", "json", token="")
    remote = _cli(served, "logs", "--since", "all", "--limit", "500", "-o", "json")
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout and len(_json_lines(remote)) > 0
    table_local = _cli(served, "logs", "-n", "shop", "--since", "all", "--limit", "20", token="")
    assert _cli(served, "logs", "--since", "all", "--limit", "20").stdout == table_local.stdout
    tid = lake_trace(2)
    every = _json_lines(_cli(served, "trace", tid, "-o", "json", token=""))
    assert {r["namespace"] for r in every} == {"shop", "pay"}
    assert _json_lines(_cli(served, "trace", tid, "-o", "json")) == [r for r in every if r["namespace"] == "shop"]
    stats = _json_lines(_cli(served, "stats", "--since", "all", "--by", "namespace", "-o", "json", token=""))
    assert _json_lines(_cli(served, "stats", "--since", "all", "--by", "namespace", "-o", "json")) == \
        [r for r in stats if r["namespace"] == "shop"]
    shop = _sql(served.config, "SELECT count(*) FROM logs WHERE namespace = 'shop'")[0][0]
    assert _json_lines(_cli(served, "sql", "SELECT count(*) AS n FROM logs", "-o", "json")) == [{"n": shop}]


def test_an_export_through_the_service_is_signed_and_holds_only_granted_rows(served, tmp_path):
    tid = lake_trace(4)
    out = tmp_path / "case.zip"
    p = _cli(served, "export", "--trace", tid, "--out", str(out))
    assert p.returncode == 0, p.stderr
    want = _sql(served.config, f"SELECT count(*) FROM logs WHERE trace_id = '{tid}' AND namespace = 'shop'")[0][0]
    v = _json_lines(_cli(served, "verify-export", str(out), "--trust-embedded-key", "-o", "json", token=""))[0]
    assert v["intact"] and v["records"] == want > 0
    p = _cli(served, "export", "--trace", tid, "--out", str(tmp_path / "no.zip"), token="bob")
    assert p.returncode == 1 and "may not export" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "no.zip").exists()


def test_the_cli_through_the_service_fails_in_one_sentence(served):
    p = _cli(served, "logs", "--since", "all", token="eve")
    assert p.returncode == 1 and "403" in p.stderr and "Traceback" not in p.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGLAKE_")}
    p = subprocess.run([sys.executable, "-m", "query.cli", "--server", "https://127.0.0.1:1", "logs"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 1 and "cannot reach https://127.0.0.1:1" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "query.cli", "--server", served.url, "logs"], capture_output=True,
                       text=True, env=env, timeout=60)   # the service's CA not given: the certificate is refused
    assert p.returncode == 1 and "cannot reach" in p.stderr and "CERTIFICATE" in p.stderr.upper()


async def _tail(served: Served, token: str, query: str, frames: int, *, until=None, timeout: float = 30):
    """Frames a tail sends (at least ``frames``, then until ``until(frames)`` is true)."""
    url = served.url.replace("https://", "wss://") + "/loki/api/v1/tail?" + urllib.parse.urlencode(
        {"query": query, "start": str(START_NS), "limit": 500})
    got = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, ssl=served.context(), headers={
                "Authorization": f"Bearer {served.tokens[token]}"}) as ws:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                got.append(json.loads(msg.data))
                if len(got) >= frames and (until is None or until(got)):
                    break
    return got


def test_tail_sends_the_granted_lines_then_new_ones_as_they_land(served):
    shop = _sql(served.config, "SELECT count(*) FROM logs WHERE namespace = 'shop'")[0][0]
    before = len(served.entries())

    with concurrent.futures.ThreadPoolExecutor(1) as pool:   # the shipper wants the main thread
        tailing = pool.submit(asyncio.run, _tail(served, "alice", '{namespace=~".+"}', 2))
        time.sleep(3)   # the first frame is out, the hub has looked at the hot files once
        fill_lake(served.config.parent, served.config, rounds=1, lines=10)
        frames = tailing.result()
    first = [(st["stream"]["namespace"], v) for st in frames[0]["streams"] for v in st["values"]]
    assert len(first) == shop and {ns for ns, _ in first} == {"shop"}
    new = [(st["stream"]["namespace"], v) for f in frames[1:] for st in f["streams"] for v in st["values"]]
    assert new and {ns for ns, _ in new} == {"shop"}
    assert all(f["dropped_entries"] is None for f in frames)
    deadline = time.monotonic() + 10   # the service writes a tail's entry once it has seen the close
    while not (tails := [e["details"] for e in served.entries()[before:] if e["details"]["endpoint"] == "tail"
                         and not e["details"].get("opened")]):
        assert time.monotonic() < deadline, "no access entry for the tail"
        time.sleep(0.1)
    assert tails[-1]["identity"] == "token:alice" and tails[-1]["rows"] == len(first) + len(new)


def test_a_thousand_tails_at_once_are_bounded_and_the_service_keeps_serving(served):
    """1,000 tails asked for at once against a limit of 3: 3 open, the rest refused with 429 before anything
    is read for them, and a query still answers."""
    async def run():
        url = served.url.replace("https://", "wss://") + "/loki/api/v1/tail?" + urllib.parse.urlencode(
            {"query": '{namespace="shop"}', "limit": 1})
        headers = {"Authorization": f"Bearer {served.tokens['alice']}"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async def attempt():
                try:
                    return await session.ws_connect(url, ssl=served.context(), headers=headers)
                except aiohttp.WSServerHandshakeError as e:
                    return e.status
            got = await asyncio.gather(*(attempt() for _ in range(1000)))
            opened = [g for g in got if not isinstance(g, int)]
            refused = [g for g in got if isinstance(g, int)]
            for ws in opened:
                await ws.close()
            return len(opened), set(refused), len(refused)
    before, queries_before = len(served.entries()), len(served.entries("query"))
    opened, codes, refused = asyncio.run(run())
    assert opened == 3 and codes == {429} and refused == 997
    # every refusal is on record, and only the 3 opened read the lake for their first lines
    assert sum(1 for e in served.entries()[before:] if e["details"]["status"] == 429) == 997
    assert sum(1 for e in served.entries("query")[queries_before:]
               if e["details"].get("command") == "serve tail") == 3
    assert served.json("/loki/api/v1/label/namespace/values", WINDOW, token="alice")["data"] == ["shop"]


def test_tails_beyond_the_limit_are_429_and_the_others_keep_theirs(served):
    async def run():
        url = served.url.replace("https://", "wss://") + "/loki/api/v1/tail?" + urllib.parse.urlencode(
            {"query": '{namespace="shop"}', "limit": 1, "start": str(START_NS)})
        headers = {"Authorization": f"Bearer {served.tokens['alice']}"}
        async with aiohttp.ClientSession() as session:
            open_ = [await session.ws_connect(url, ssl=served.context(), headers=headers) for _ in range(3)]
            for ws in open_:
                assert (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.TEXT
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(url, ssl=served.context(), headers=headers)
            assert refused.value.status == 429
            for ws in open_:
                await ws.close()
    asyncio.run(run())
    assert served.json("/loki/api/v1/label/namespace/values", WINDOW, token="alice")["data"] == ["shop"]


def test_tail_follow_through_the_service_prints_new_granted_lines(served):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGLAKE_")}
    env.update({"LOGLAKE_SERVER": served.url, "LOGLAKE_TOKEN": served.tokens["alice"],
                "LOGLAKE_CACERT": str(served.certs / "ca.crt")})
    proc = subprocess.Popen([sys.executable, "-m", "query.cli", "tail", "-f", "--lines", "3", "--interval", "0.5",
                             "-o", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()

    def take(n: int) -> list[dict]:
        out = []
        for _ in range(n):
            try:
                out.append(json.loads(lines.get(timeout=30)))
            except queue.Empty:
                proc.kill()
                raise AssertionError(f"{len(out)} of {n} lines came; stderr: {proc.stderr.read()}") from None
        return out
    try:
        first = take(3)
        assert {r["namespace"] for r in first} == {"shop"}
        fill_lake(served.config.parent, served.config, rounds=1, lines=5)
        new = take(10)   # 5 lines on each of two nodes
        assert {r["namespace"] for r in new} == {"shop"}
        assert len({(r["time"], r["pod"], r["body"]) for r in first + new}) == 13   # none twice
        time.sleep(2)
        assert lines.empty()   # and nothing more: pay's lines were never sent
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_report_says_who_saw_what_per_namespace(served, tmp_path):
    lines = _lines(served.json("/loki/api/v1/query_range", {"query": '{namespace="shop"}', "limit": 9, **WINDOW},
                               token="alice"))
    assert len(lines) == 9
    from aggregator.cli.run import main as aggregator
    assert aggregator(["--config", str(served.config), "report", "--since", "2026-01-01T00:00:00Z",
                       "--out", str(tmp_path / "report.md")]) == 0
    doc = json.loads((tmp_path / "report.json").read_text())
    seen = doc["served"]["seen_by_identity_and_namespace"]
    # counted from the access entries themselves: the report agrees with the trail, request by request
    want: dict = {}
    for e in served.entries():
        d = e["details"]
        if d["status"] == 200:
            for ns, n in (d.get("namespaces") or {"(aggregates)": d["rows"]}).items():
                got = want.setdefault(d["identity"], {}).setdefault(ns or "(none)", {"requests": 0, "rows": 0})
                got["requests"] += 1
                got["rows"] += n
    assert seen == want
    assert set(seen["token:alice"]) <= {"shop", "(aggregates)", "*"} and seen["token:alice"]["shop"]["rows"] >= 9
    assert "pay" not in seen["token:alice"] and set(seen["token:bob"]) <= {"pay", "(aggregates)", "*"}
    assert doc["served"]["refused"]["token:eve (403)"] >= 1
    text = (tmp_path / "report.md").read_text()
    assert "## Who saw what (loglake-query serve)" in text and "| token:alice | shop |" in text


# The requests Grafana's Loki data source sends (Grafana 11/12: datasource health check, label browser,
# Explore's logs and their volume histogram, a dashboard's time series panel), as it sends them.
GRAFANA = [
    ("save & test", "/loki/api/v1/query", {"query": "vector(1)+vector(1)", "time": str(END_NS)}),
    ("label browser: names", "/loki/api/v1/labels", {"start": str(START_NS), "end": str(END_NS)}),
    ("label browser: values", "/loki/api/v1/label/container/values",
     {"start": str(START_NS), "end": str(END_NS), "query": '{namespace="shop"}'}),
    ("explore: logs", "/loki/api/v1/query_range",
     {"direction": "backward", "end": str(END_NS), "limit": "100", "query": '{namespace="shop"} |= "r1"',
      "start": str(START_NS), "step": "14400ms"}),
    ("explore: volume", "/loki/api/v1/query_range",
     {"direction": "backward", "end": str(END_NS), "query": 'sum by (level) (count_over_time({namespace="shop"} '
      '|= "r1" [1m]))', "start": str(START_NS), "step": "60000ms", "supportingQueryType": "logsVolume"}),
    ("dashboard panel", "/loki/api/v1/query_range",
     {"end": str(END_NS), "query": 'sum by (container) (rate({namespace=~"shop|pay"} [5m]))',
      "start": str(START_NS), "step": "300"}),
    ("query stats", "/loki/api/v1/index/stats", {"query": '{namespace="shop"}', "start": str(START_NS),
                                                  "end": str(END_NS)}),
    ("logs drilldown volume", "/loki/api/v1/index/volume",
     {"query": '{namespace=~".+"}', "start": str(START_NS), "end": str(END_NS), "limit": "100",
      "targetLabels": "container"}),
]


@pytest.mark.parametrize("what, path, params", GRAFANA, ids=[g[0] for g in GRAFANA])
def test_grafanas_requests_get_lokis_shapes(served, what, path, params):
    doc = served.json(path, params, token="alice")
    if path.endswith("/index/stats"):
        assert set(doc) == {"streams", "chunks", "bytes", "entries"} and all(isinstance(v, int) for v in doc.values())
        return
    assert doc["status"] == "success"
    data = doc["data"]
    if path.endswith(("/labels", "/values")):
        assert isinstance(data, list) and data and all(isinstance(v, str) for v in data)
        assert data == sorted(data)
        if path.endswith("/values"):
            assert data == ["nginx"]   # the selector's, among the caller's rows
        return
    kind, result = data["resultType"], data["result"]
    assert result, what
    if kind == "streams":
        for s in result:
            assert set(s) == {"stream", "values"} and all(isinstance(v, str) for v in s["stream"].values())
            for ts, line in s["values"]:
                assert isinstance(ts, str) and ts.isdigit() and len(ts) == 19 and isinstance(line, str)
                assert START_NS <= int(ts) <= END_NS and "r1" in line
        assert sum(len(s["values"]) for s in result) <= 100
    elif kind == "matrix":
        for s in result:
            assert set(s) == {"metric", "values"} and isinstance(s["metric"], dict)
            times = [t for t, _ in s["values"]]
            assert times == sorted(times) and all(isinstance(t, (int, float)) for t in times)
            assert all(isinstance(v, str) and float(v) >= 0 for _, v in s["values"])
        labels = {k for s in result for k in s["metric"]}
        assert labels == ({"level"} if "volume" in what else {"container"})
        if what == "dashboard panel":
            assert {s["metric"]["container"] for s in result} == {"nginx"}   # pay's app is not the caller's
    else:
        assert kind == "vector"
        for s in result:
            assert set(s) == {"metric", "value"} and isinstance(s["value"][0], (int, float))
            assert isinstance(s["value"][1], str)
        if what == "save & test":
            assert result == [{"metric": {}, "value": [END_NS / 1e9, "2"]}]
        else:
            assert {s["metric"].get("container") for s in result} == {"nginx"}


def test_sigterm_stops_the_service_cleanly(served):
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=30) == 0
    assert "Traceback" not in served.proc.stderr.read()
