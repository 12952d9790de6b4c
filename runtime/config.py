"""One TOML file, a section per component, environment overrides on top.

Each component describes its section as a frozen dataclass; ``load_section``
fills it from the file and from ``LOGLAKE_<SECTION>_<KEY>`` variables (e.g.
``LOGLAKE_KAFKA_BOOTSTRAP_SERVERS``, ``LOGLAKE_SHIPPER_NODE_NAME``), which win
over the file. Relative paths in the file are resolved against the file's own
directory, so a config works from any working directory; paths given in the
environment are resolved against the working directory, like any shell path.

A variable naming no setting is an error (that catches typos), except the ones
kubelet injects for every Service of the namespace ("service links"): a Service
``loglake-shipper`` gives ``LOGLAKE_SHIPPER_PORT=tcp://10.0.0.1:2020``,
``LOGLAKE_SHIPPER_SERVICE_HOST`` and so on, which look like [shipper] overrides
but are not. Those shapes are skipped unless the name is a real setting (see
``service_link``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NewType, TypeVar

from runtime.errors import ConfigError

T = TypeVar("T")
# A local directory (resolved like a Path) or a URL such as s3://bucket/prefix (kept as is).
Location = NewType("Location", str)
ENV_PREFIX = "LOGLAKE_"
_TRUE = {"1", "true", "yes", "on"}
# Keys whose values are never repeated in an error message.
_SECRET = re.compile(r"master_key|password|secret|token", re.IGNORECASE)
_FALSE = {"0", "false", "no", "off"}
# Kubernetes service links, as what follows LOGLAKE_<SECTION>_ (kubelet spells a Service's name in
# upper case with '_' for '-', so a Service loglake-shipper-metrics gives LOGLAKE_SHIPPER_METRICS_PORT):
#   <SVC>_PORT=tcp://10.0.0.1:2020             <SVC>_PORT_2020_TCP=tcp://10.0.0.1:2020
#   <SVC>_PORT_2020_TCP_PROTO=tcp  _PORT=2020  _ADDR=10.0.0.1
#   <SVC>_SERVICE_HOST=10.0.0.1  <SVC>_SERVICE_PORT=2020  <SVC>_SERVICE_PORT_<PORT NAME>=2020
_SVC = r"(?:[A-Z0-9_]+_)?"
_PROTO = r"(?:TCP|UDP|SCTP)"
_LINK_NAME = re.compile(_SVC + rf"(?:PORT_[0-9]+_{_PROTO}(?:_(?:PROTO|PORT|ADDR))?"
                        r"|SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?)")
_LINK_URL_NAME = re.compile(_SVC + rf"PORT(?:_[0-9]+_{_PROTO})?")
_LINK_URL = re.compile(r"(?:tcp|udp|sctp)://(?:\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+):[0-9]+")


def service_link(rest: str, value: str, fields: typing.Collection[str] = ()) -> bool:
    """Whether ``LOGLAKE_<SECTION>_<rest>=value`` is a variable kubelet injected for a Service rather
    than a setting of the section, whose field names are ``fields``.

    ``..._PORT`` is one only when its value is a service-link URL (``tcp://10.0.0.1:2020``); the other
    shapes (``..._PORT_<n>_<PROTO>[_PROTO|_PORT|_ADDR]``, ``..._SERVICE_HOST``, ``..._SERVICE_PORT[_<NAME>]``)
    by their name alone. A name that is a setting of the section is that setting, unless its value is a
    service-link URL and its name one of the shapes whose value kubelet sets to one."""
    if _LINK_NAME.fullmatch(rest) and rest.lower() not in fields:
        return True
    return _LINK_URL_NAME.fullmatch(rest) is not None and _LINK_URL.fullmatch(value) is not None


@dataclasses.dataclass(frozen=True)
class ConfigFile:
    path: Path | None
    data: Mapping[str, Any]
    env: Mapping[str, str]

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def has_section(self, name: str, cls: type | None = None) -> bool:
        """Whether the file has ``[name]`` or a variable sets one of its keys; kubelet's service links
        (see ``service_link``; a Service loglake-kafka) do not count. With ``cls``, the section's
        dataclass, a real setting of a service-link shape counts."""
        if name in self.data:
            return True
        prefix = f"{ENV_PREFIX}{name.upper()}_"
        fields = {f.name for f in dataclasses.fields(cls)} if cls else set()
        return any(k.startswith(prefix) and not service_link(k[len(prefix):], v, fields) for k, v in self.env.items())


# Where a config is looked for when neither --config nor LOGLAKE_CONFIG names one (like logcli's
# LOKI_ADDR, kubectl's KUBECONFIG): the working directory, the user's, the system's.
SEARCH_PATH = (Path("loglake.toml"), Path("~/.config/loglake/loglake.toml"), Path("/etc/loglake/loglake.toml"))


def version() -> str:
    """The installed loglake's version, for --version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed
    try:
        return installed("loglake")
    except PackageNotFoundError:
        return "unknown (not installed)"


def read(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> ConfigFile:
    env = dict(os.environ if env is None else env)
    if path is None:
        path = env.get(f"{ENV_PREFIX}CONFIG") or next(
            (str(p.expanduser()) for p in SEARCH_PATH if p.expanduser().is_file()), None)
    if path is None:
        return ConfigFile(None, {}, env)
    p = Path(path).resolve()
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist; pass --config with the path of your loglake.toml") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
    return ConfigFile(p, data, env)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, where: str, base_dir: Path) -> Any:
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where} must be set")
    origin = typing.get_origin(tp)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
            raise ValueError
        if tp is int:
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise ValueError
            return value
        if tp is Path or tp is Location:
            if not isinstance(value, str):
                raise ValueError
            if tp is Location and "://" in value:
                return value.rstrip("/")
            p = Path(value).expanduser()
            p = p if p.is_absolute() else (base_dir / p)
            return p if tp is Path else str(p)
        if origin is tuple:
            (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
            if isinstance(item, type) and dataclasses.is_dataclass(item):  # an array of tables ([[retention.rules]])
                if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                    raise ValueError
                return tuple(_build(item, v, f"{where}[{i}]", base_dir) for i, v in enumerate(value))
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list):
                raise ValueError
            return tuple(_coerce(v, item, where, base_dir) for v in value)
        if origin is dict or tp is dict:
            if isinstance(value, str):  # from the environment: "k=v,k2=v2"
                value = dict(kv.split("=", 1) for kv in value.split(",") if kv.strip())
            if not isinstance(value, dict):
                raise ValueError
            return {str(k).strip(): str(v).strip() for k, v in value.items()}
    except (ValueError, TypeError):
        shown = "(not shown: it may be a secret)" if _SECRET.search(where) else repr(value)
        raise ConfigError(f"{where} has an invalid value {shown}; expected {getattr(tp, '__name__', tp)}") from None
    raise ConfigError(f"{where}: unsupported field type {tp}")  # a programming error, caught by tests


def _build(cls: type[T], raw: Mapping[str, Any], where: str, base_dir: Path) -> T:
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; known keys are {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    try:
        return cls(**{k: _coerce(v, hints[k], f"{where} {k}", base_dir) for k, v in raw.items()})
    except TypeError as e:
        raise ConfigError(f"{where} is incomplete: {e}") from None


# zstd's levels: 1 is the fastest, 22 the smallest (negative "fast" levels are not offered: they
# compress logs poorly, and DuckDB's Parquet writer refuses them).
ZSTD_LEVELS = (1, 22)


def check_range(section: str, name: str, value: int, low: int, high: int, what: str = "") -> None:
    """A setting that must lie in [low, high], with one sentence naming it, its value and the range."""
    if not low <= value <= high:
        raise ConfigError(f"[{section}] {name} = {value} is out of range: use {low} to {high}{what}")


def load_section(cls: type[T], cfg: ConfigFile, section: str) -> T:
    """Build ``cls`` from ``[section]`` plus environment overrides."""
    raw = cfg.data.get(section, {})
    if not isinstance(raw, dict):
        raise ConfigError(f"[{section}] in {cfg.path} must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in [{section}] of {cfg.path}; "
                          f"known keys are {', '.join(sorted(fields))}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        values[name] = _coerce(value, hints[name], f"[{section}] {name}", cfg.base_dir)
    prefix = f"{ENV_PREFIX}{section.upper()}_"
    for key, value in cfg.env.items():
        if key.startswith(prefix):
            if service_link(key[len(prefix):], value, fields):
                continue
            name = key[len(prefix):].lower()
            if name not in fields:
                raise ConfigError(f"environment variable {key} names no setting of [{section}]; "
                                  f"known keys are {', '.join(sorted(fields))}")
            values[name] = _coerce(value, hints[name], f"environment {key}", Path.cwd())
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(f"[{section}] in {cfg.path} is incomplete: {e}") from None
