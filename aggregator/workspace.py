"""What a background job (compaction, retention) works with, opened for it alone: its own catalog
connection, the key ring over it, the storage roots and a DuckDB writer. A job running beside the
consumer must not share the consumer's connections, which are not safe to use from two threads."""

from __future__ import annotations

from dataclasses import dataclass

from aggregator.config import Settings
from aggregator.writer import ParquetWriter
from lake.catalog.base import Catalog, open_catalog
from lake.keys import KeyRing, MasterKey
from lake.storage import Storage


@dataclass(frozen=True)
class Workspace:
    catalog: Catalog
    keyring: KeyRing
    storage: Storage
    writer: ParquetWriter

    @classmethod
    def open(cls, settings: Settings, master: MasterKey) -> Workspace:
        catalog = open_catalog(settings.aggregator)
        storage = Storage(settings.aggregator, settings.tiers)
        return cls(catalog, KeyRing(catalog, master), storage, ParquetWriter(storage))
