"""Who a request is: a bearer token, a client certificate, or a JWT from the site's identity provider.

Tokens are 256 random bits, shown once when created (``loglake-query token create NAME``) and stored only
as their SHA-256 (a token is as strong as a key, so a slow password hash adds nothing). The file is read
again whenever it changes, so a revoked token stops working at once, without a restart. A client
certificate identifies its subject's common name, once TLS has checked it against ``client_ca_file``.
A JWT is accepted only if signed by a key of the configured JWKS file (RS256, ES256 or EdDSA; never
``none`` nor an HMAC keyed with a public key), unexpired, from the configured issuer, for this
service's audience.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson

from runtime.durable import write_durably
from runtime.errors import ConfigError, Unauthenticated
from query.serve.config import ServeConfig

TOKEN_PREFIX = "llk_"
JWT_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"]


@dataclass(frozen=True)
class Identity:
    name: str
    how: str                              # "token", "cert", "jwt"
    groups: tuple[str, ...] = ()

    @property
    def principals(self) -> tuple[str, ...]:
        """What roles' ``members`` may name this identity by."""
        return (f"{self.how}:{self.name}", *(f"group:{g}" for g in self.groups))

    def doc(self) -> dict[str, Any]:
        """As the audit trail records it."""
        return {"identity": f"{self.how}:{self.name}", "auth": self.how,
                **({"groups": list(self.groups)} if self.groups else {})}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """The tokens file: ``{"tokens": [{"name", "sha256", "created"}]}``, owner-only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._tokens: list[dict[str, str]] = []

    def _load(self) -> list[dict[str, str]]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        with self._lock:
            if self._seen != (st.st_ino, st.st_mtime_ns, st.st_size):   # rewritten files get a new inode
                try:
                    doc = orjson.loads(self.path.read_bytes())
                    tokens = [t for t in doc["tokens"] if isinstance(t.get("name"), str)
                              and isinstance(t.get("sha256"), str)]
                except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                    raise ConfigError(f"tokens file {self.path} is not what 'loglake-query token' writes; restore "
                                      "it from backup or create the tokens again") from None
                self._tokens, self._seen = tokens, (st.st_ino, st.st_mtime_ns, st.st_size)
            return self._tokens

    def names(self) -> list[dict[str, str]]:
        return [{"name": t["name"], "created": t.get("created", "")} for t in self._load()]

    def create(self, name: str) -> str:
        """A new token for ``name`` (which must not have one): returned once, stored as its digest."""
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").replace("@", "").isalnum():
            raise ConfigError(f"token name {name!r}: use letters, digits and - _ . @ (it is the identity "
                              "token:NAME that roles name)")
        tokens = self._load()
        if any(t["name"] == name for t in tokens):
            raise ConfigError(f"{name!r} has a token already; revoke it first ('loglake-query token revoke "
                              f"{name}') to issue another")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._write([*tokens, {"name": name, "sha256": _digest(token), "created": created}])
        return token

    def revoke(self, name: str) -> None:
        tokens = self._load()
        if not any(t["name"] == name for t in tokens):
            raise ConfigError(f"there is no token named {name!r}; 'loglake-query token list' shows them")
        self._write([t for t in tokens if t["name"] != name])

    def _write(self, tokens: list[dict[str, str]]) -> None:
        write_durably(self.path, orjson.dumps({"tokens": tokens}, option=orjson.OPT_INDENT_2), mode=0o600)

    def identify(self, token: str) -> Identity | None:
        digest = _digest(token)
        found = None
        for t in self._load():   # every entry compared, in constant time each: no early exit to time
            if hmac.compare_digest(t["sha256"], digest):
                found = t["name"]
        return Identity(found, "token") if found is not None else None


class JwtVerifier:
    def __init__(self, cfg: ServeConfig) -> None:
        assert cfg.jwks_file is not None
        try:
            self.keys = jwt.PyJWKSet.from_dict(orjson.loads(cfg.jwks_file.read_bytes()))
        except (OSError, orjson.JSONDecodeError, jwt.PyJWKSetError) as e:
            raise ConfigError(f"[serve] jwks_file {cfg.jwks_file} cannot be used: {e}") from None
        self.cfg = cfg

    def identify(self, token: str) -> Identity:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            matching = [k for k in self.keys.keys if kid is None or k.key_id == kid]
            if not matching:
                raise Unauthenticated("the JWT is signed by a key the configured JWKS does not hold")
            claims = None
            for key in matching:
                try:
                    claims = jwt.decode(token, key.key, algorithms=JWT_ALGORITHMS, audience=self.cfg.jwt_audience,
                                        issuer=self.cfg.jwt_issuer, options={"require": ["exp", "sub"]})
                    break
                except (jwt.InvalidSignatureError, jwt.InvalidKeyError, TypeError, ValueError):
                    continue   # not this key (another kind of key raises TypeError or ValueError)
            if claims is None:
                raise Unauthenticated("the JWT's signature does not verify with the configured JWKS")
        except jwt.PyJWTError as e:
            raise Unauthenticated(f"the JWT is not accepted: {e}") from None
        groups = claims.get(self.cfg.jwt_groups_claim, [])
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise Unauthenticated(f"the JWT's {self.cfg.jwt_groups_claim!r} claim must be a list of group names")
        if not isinstance(claims["sub"], str):
            raise Unauthenticated("the JWT's sub claim must be a string")
        return Identity(claims["sub"], "jwt", tuple(groups))


class Authenticator:
    """A request's identity from its Authorization header or its TLS client certificate."""

    def __init__(self, cfg: ServeConfig, tokens: TokenStore) -> None:
        self.tokens = tokens
        self.jwt = JwtVerifier(cfg) if cfg.jwks_file is not None else None

    def identify(self, authorization: str | None, peer_cert: dict[str, Any] | None) -> Identity:
        if authorization:
            scheme, _, credential = authorization.partition(" ")
            credential = credential.strip()
            if scheme.lower() != "bearer" or not credential:
                raise Unauthenticated("use 'Authorization: Bearer TOKEN' (a token from 'loglake-query token "
                                      "create', or a JWT from your identity provider)")
            if credential.startswith(TOKEN_PREFIX):
                found = self.tokens.identify(credential)
                if found is None:
                    raise Unauthenticated("the bearer token is not known (revoked, or mistyped)")
                return found
            if self.jwt is None:
                raise Unauthenticated("the bearer token is not a loglake token, and no JWKS is configured for JWTs")
            return self.jwt.identify(credential)
        cn = _common_name(peer_cert)
        if cn is not None:
            return Identity(cn, "cert")
        raise Unauthenticated("no credential: send 'Authorization: Bearer TOKEN' or a client certificate")


def _common_name(peer_cert: dict[str, Any] | None) -> str | None:
    """The subject CN of a certificate TLS verified (ssl's getpeercert() form)."""
    for rdn in (peer_cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and value:
                return str(value)
    return None
