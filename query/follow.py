"""``loglake-query tail -f``: print the last lines, then new ones as they land.

New records arrive in new hot files. Each poll asks the catalog for hot files
not seen before and prints their matching records in time order, so a line is
printed once even when compaction later moves it into a warm file. The command is
in the audit trail once, when it starts (query.cli). (A hot file
compacted away between two polls would be missed; ``[tiers] warm_after_s``
defaults to minutes, polls are a second apart.)
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from types import FrameType

import pyarrow as pa

from lake.catalog.model import Tier
from query import output, plan
from query.connect import Lake, run_sql
from query.filters import Filters

Printer = Callable[[pa.Table, bool], None]  # (rows, first print?)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def follow(lake: Lake, filters: Filters, columns: str, lines: int, interval_s: float, show: Printer,
           follow_new: bool = True) -> None:
    signal.signal(signal.SIGTERM, _stop)
    where, params = filters.where()
    seen = {f.path for f in lake.catalog.files(tier=Tier.HOT)}
    chosen = plan.select(lake.catalog, filters, lake.keyring.get)
    last = run_sql(lake._view(chosen.files), f"SELECT {columns} FROM logs WHERE {where} "
                                            f"ORDER BY time DESC, record_id DESC LIMIT {lines}", params)
    show(output.reversed_rows(last), True)
    try:
        while follow_new:
            time.sleep(interval_s)
            new = [f for f in lake.catalog.files(tier=Tier.HOT) if f.path not in seen]
            seen.update(f.path for f in new)
            new = [f for f in new if filters.may_match(f.namespaces, f.containers, f.min_time, f.max_time)]
            if new:
                show(run_sql(lake._view(new), f"SELECT {columns} FROM logs WHERE {where} ORDER BY time, record_id",
                             params), False)
    except KeyboardInterrupt:
        pass
