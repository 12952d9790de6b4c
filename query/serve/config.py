"""``[serve]``: where ``loglake-query serve`` listens, its TLS, who may call it and what each may see.

    [serve]
    listen = "0.0.0.0:3100"
    tls_cert_file = "certs/serve.crt"
    tls_key_file = "certs/serve.key"
    client_ca_file = "certs/ca.crt"        # client certificates from this CA identify their subject's CN

    [[serve.roles]]
    name = "shop-sre"
    permissions = ["read", "export"]
    members = ["token:alice", "cert:bob", "group:sre"]
    [[serve.roles.grants]]
    namespace = "shop"
    container = "*"

Deny by default: an identity that no role names may do nothing, and a role with no grants reads no
rows. Permissions: ``read`` (logs, trace, stats, tail, labels), ``export``, ``sql``, ``admin``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lake.selector import Selector, levels_sql, parse_levels
from runtime import config as config_file
from runtime.config import check_range
from runtime.errors import ConfigError

PERMISSIONS = ("read", "export", "sql", "admin")
MEMBER_KINDS = ("token", "cert", "jwt", "group")


@dataclass(frozen=True)
class GrantConfig:
    """Rows a role covers: globs over namespace, pod and container, and optionally levels (``warn+``)."""
    namespace: str = "*"
    pod: str = "*"
    container: str = "*"
    levels: str = ""

    def __post_init__(self) -> None:
        if self.levels:
            parse_levels(self.levels)   # refused here, with the level named, rather than at a request

    def selector(self) -> Selector:
        return Selector(namespace=self.namespace, pod=self.pod, container=self.container)

    def sql(self) -> str:
        """The grant as one SQL condition, its globs inlined (it becomes part of the ``logs`` relation)."""
        selector = self.selector().sql()
        return f"({selector} AND {levels_sql(parse_levels(self.levels))})" if self.levels else f"({selector})"


@dataclass(frozen=True)
class RoleConfig:
    name: str
    permissions: tuple[str, ...] = ()
    # who holds the role: "token:NAME", "cert:CN", "jwt:SUBJECT", "group:GROUP" (a JWT's groups claim)
    members: tuple[str, ...] = ()
    grants: tuple[GrantConfig, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.permissions) - set(PERMISSIONS))
        if unknown:
            raise ConfigError(f"[[serve.roles]] {self.name!r} has unknown permission(s) {', '.join(unknown)}; "
                              f"choose from {', '.join(PERMISSIONS)}")
        for member in self.members:
            kind, _, name = member.partition(":")
            if kind not in MEMBER_KINDS or not name:
                raise ConfigError(f"[[serve.roles]] {self.name!r} member {member!r} must be KIND:NAME with KIND one "
                                  f"of {', '.join(MEMBER_KINDS)}, e.g. token:alice or group:sre")


@dataclass(frozen=True)
class ServeConfig:
    listen: str = "127.0.0.1:3100"
    # TLS is required: the service does not start without a certificate and its key.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Client certificates signed by this CA are identities ("cert:<subject CN>"); unset: none are asked for.
    client_ca_file: Path | None = None
    # Bearer tokens, as SHA-256 digests (loglake-query token create). Default: <data_dir>/serve-tokens.json.
    tokens_file: Path | None = None
    # JWTs (OIDC) are identities ("jwt:<sub>", and "group:<g>" for each of the groups claim) when signed by a
    # key of this JWKS file, and issued by jwt_issuer for jwt_audience (both required with a JWKS).
    jwks_file: Path | None = None
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_groups_claim: str = "groups"
    roles: tuple[RoleConfig, ...] = ()
    # Threads that read the lake, each with its own DuckDB database; requests beyond them wait.
    workers: int = 2
    # Bounds on what one request may ask (Loki's own defaults where it has one).
    max_body_bytes: int = 1024 * 1024
    max_limit: int = 5000                 # lines per query (Loki: max_entries_limit_per_query)
    max_range_s: int = 721 * 3600         # a query's time range (Loki: max_query_length, 721h)
    max_series: int = 500                 # series of a metric query (Loki: max_query_series)
    max_points: int = 11_000              # points per series (Prometheus' and Loki's limit)
    query_timeout_s: float = 60.0
    max_tail_connections: int = 100       # open /tail WebSockets (Loki: max_concurrent_tail_requests, 10)
    # Web origins (e.g. "https://grafana.example") whose pages may open a tail WebSocket; others are refused.
    allowed_origins: tuple[str, ...] = ()
    # An open tail checks its caller's credential and grant again this often (a revoked token, an expired
    # JWT, a changed role end it).
    tail_recheck_s: float = 10.0
    # SQL (permission sql) runs over the caller's rows of its window, copied into a sandbox database: at
    # most this many rows copied, this much memory, this long, this many rows answered.
    sql_max_input_rows: int = 1_000_000
    sql_memory_limit: str = "1GB"
    sql_timeout_s: float = 30.0
    sql_max_rows: int = 10_000

    def __post_init__(self) -> None:
        check_range("serve", "workers", self.workers, 1, 64)
        for name in ("max_body_bytes", "max_limit", "max_range_s", "max_series", "max_points",
                     "max_tail_connections", "sql_max_input_rows", "sql_max_rows"):
            check_range("serve", name, getattr(self, name), 1, 2**40)
        for name in ("query_timeout_s", "sql_timeout_s", "tail_recheck_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"[serve] {name} = {getattr(self, name)} must be above 0 seconds")
        names = [r.name for r in self.roles]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"[[serve.roles]] name(s) {', '.join(twice)} appear more than once; give each role "
                              "one table")
        if self.jwks_file is not None and not (self.jwt_issuer and self.jwt_audience):
            raise ConfigError("[serve] jwks_file needs jwt_issuer and jwt_audience too: a JWT is accepted only "
                              "from the configured issuer, for this service")

    @property
    def address(self) -> tuple[str, int]:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError(f"[serve] listen = {self.listen!r} must be HOST:PORT, e.g. 0.0.0.0:3100")
        return host.strip("[]") or "0.0.0.0", int(port)


def load(path: str | None, env: dict[str, str] | None = None) -> ServeConfig:
    return config_file.load_section(ServeConfig, config_file.read(path, env), "serve")
