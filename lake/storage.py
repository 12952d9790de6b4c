"""Where each tier's files live, and how a file becomes durable there.

Catalog paths start with their tier (``hot/…``, ``warm/…``, ``cold/…``) and are
relative to the tier's root: hot and warm live under ``data_dir``; cold under
``[tiers] cold_dir``, a local directory or ``s3://bucket/prefix`` reached through
DuckDB's httpfs. A local file is written under a temporary name, fsynced and
renamed; an S3 object appears only once its upload completes, so it is written
in place.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lake.catalog.model import Tier
from lake.config import AggregatorConfig, TiersConfig
from lake.duck import Connection
from runtime.durable import fsync_path
from runtime.errors import StorageError


def _is_remote(root: str) -> bool:
    return "://" in root


@dataclass(frozen=True)
class Target:
    """One file being written: DuckDB writes ``staging``; ``publish`` makes it ``final``."""
    final: str
    staging: str

    def publish(self) -> None:
        if self.staging == self.final:
            return
        fsync_path(Path(self.staging))
        os.rename(self.staging, self.final)
        fsync_path(Path(self.final).parent)

    def discard(self) -> None:
        if self.staging != self.final:
            Path(self.staging).unlink(missing_ok=True)


def digest(location: str, con: Connection | None = None) -> tuple[int, str]:
    """(size, sha256 hex) of a stored file; object storage is read through DuckDB (``con`` configured)."""
    if _is_remote(location):
        if con is None:
            raise StorageError(f"reading {location} needs a DuckDB connection with S3 credentials")
        row = con.execute("SELECT size, sha256(content) FROM read_blob(?)", [location]).fetchone()
        if row is None:
            raise StorageError(f"{location} does not exist")
        return int(row[0]), str(row[1])
    h = hashlib.sha256()
    size = 0
    with open(location, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


@dataclass(frozen=True)
class Layout:
    row_group_size: int
    zstd_level: int
    # Warm and cold files carry a needle index (lake.needle_index). A hot file lives minutes
    # (warm_after_s) and a needle query reads it whole: indexing it would cost every ingested record.
    needle_index: bool = False


class Storage:
    def __init__(self, cfg: AggregatorConfig, tiers: TiersConfig) -> None:
        self.data_dir = cfg.data_dir
        self.tiers = tiers
        self.cfg = cfg
        data = str(cfg.data_dir)
        self.roots = {Tier.HOT: data, Tier.WARM: data, Tier.COLD: tiers.cold_dir or data}

    def layout(self, tier: Tier) -> Layout:
        """How files of ``tier`` are written: hot files as [aggregator] says, warm and cold as [tiers] does."""
        t = self.tiers
        return {Tier.HOT: Layout(self.cfg.parquet_row_group_size, self.cfg.parquet_zstd_level),
                Tier.WARM: Layout(t.warm_row_group_size, t.warm_zstd_level, needle_index=True),
                Tier.COLD: Layout(t.cold_row_group_size, t.cold_zstd_level, needle_index=True)}[Tier(tier)]

    def location(self, tier: Tier, rel: str) -> str:
        return f"{self.roots[tier]}/{rel}"

    def target(self, tier: Tier, rel: str) -> Target:
        final = self.location(tier, rel)
        if _is_remote(final):
            return Target(final, final)
        Path(final).parent.mkdir(parents=True, exist_ok=True)
        return Target(final, str(Path(final).with_name(f".{Path(final).name}.tmp")))

    def unlink(self, tier: Tier, rel: str) -> None:
        where = self.location(tier, rel)
        if _is_remote(where):
            raise StorageError(f"cannot delete {where}: deleting from object storage is not supported yet; "
                               "remove it with your bucket's tools or a lifecycle rule")
        Path(where).unlink(missing_ok=True)

    def discard(self, tier: Tier, rel: str) -> None:
        """Remove what a failed job wrote, if it can be: the job's own error is the one to report, and what
        stays is an unlisted file that tidy removes later (locally) or the bucket's rules do (s3://)."""
        with contextlib.suppress(OSError, StorageError):
            self.unlink(tier, rel)

    def local_files(self, tier: Tier) -> Iterator[str]:
        """Every file under a local tier directory (temporary ones too), as catalog-style paths."""
        root = self.roots[tier]
        if _is_remote(root):
            return
        base = Path(root)
        for path in (base / tier).rglob("*"):
            if path.is_file():
                yield str(path.relative_to(base))

    def configure(self, con: Connection) -> None:
        """Give a DuckDB connection the S3 credentials remote roots need."""
        if not any(_is_remote(r) for r in self.roots.values()):
            return
        t = self.tiers
        params = {"KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", ""),
                  "SECRET": os.environ.get("AWS_SECRET_ACCESS_KEY", ""), "REGION": t.s3_region,
                  "URL_STYLE": t.s3_url_style}
        if t.s3_endpoint:
            params["ENDPOINT"] = t.s3_endpoint
        options = ", ".join(f"{k} '{v.replace(chr(39), chr(39) * 2)}'" for k, v in params.items())
        con.execute(f"CREATE OR REPLACE SECRET loglake_s3 (TYPE s3, {options}, USE_SSL {str(t.s3_use_ssl).lower()})")

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Held while compacting or cleaning up, so only one process moves files at a time."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / ".files.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
