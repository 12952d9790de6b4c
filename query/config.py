"""``[query]``: how results are shown and how exports are signed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime import config as config_file


@dataclass(frozen=True)
class QueryConfig:
    # Time zone results are shown in (IANA name); --tz overrides it.
    tz: str = "UTC"
    # Ed25519 private key that signs exports; created on first export (owner-only) if missing.
    # Default: <[aggregator] data_dir>/keys/export-signing.key.
    export_key_file: Path | None = None


def load(path: str | None, env: dict[str, str] | None = None) -> QueryConfig:
    return config_file.load_section(QueryConfig, config_file.read(path, env), "query")
