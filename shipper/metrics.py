"""The shipper's /metrics, /healthz (liveness) and /readyz (readiness).

Liveness says only whether the agent's loop turns: a broker outage or a full
disk buffer is a state the shipper handles (buffering, pausing reading), and a
restart would not end it, so it must not fail liveness (a restart loop would
only lose the lines held in memory). Readiness says whether lines are leaving
the node now: it is 503 while batches wait in the disk buffer or reading is
paused.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry

from runtime import metrics
from shipper.agent import Agent
from shipper.config import ShipperConfig
from shipper.enrich import DOCKER_CONFIG_ERROR

# Kinds of input problems, each counted in errors_total{kind}: the native core's (KINDS in
# shipper/lines/src/records.rs) and the Python side's (shipper/agent.py, followed.py, slots.py, records.py).
NATIVE_ERROR_KINDS = ("bad_prefix", "empty_line", "nul_bytes", "truncated", "invalid_utf8", "partial",
                      "non_object_json", "time_claimed")
AGENT_ERROR_KINDS = ("open_failed", "checkpoint_write_failed", "open_files_limit", "link_refused",
                     DOCKER_CONFIG_ERROR)
ERROR_KINDS = NATIVE_ERROR_KINDS + AGENT_ERROR_KINDS
# One loop turn may wait for acknowledgements (up to ack_timeout) a couple of times, and list many
# files; only a loop silent for much longer than that is wedged.
WEDGED_AFTER_MIN_S = 60.0


def redaction_rules(cfg: ShipperConfig) -> list[str]:
    """The names the native core counts redactions under: the built-in rules configured, then
    ``custom_<i>`` for the i-th of ``redact_patterns`` (shipper/lines/src/redact.rs)."""
    return [*cfg.redact, *(f"custom_{i}" for i in range(len(cfg.redact_patterns)))]


def wedged_after_s(cfg: ShipperConfig) -> float:
    return max(WEDGED_AFTER_MIN_S, 4 * cfg.ack_timeout_ms / 1000)


def _lag(agent: Agent) -> dict[str, float]:
    out = {}
    for src in agent.files.sources():
        try:
            out[src.name] = float(src.tail.unread())
        except OSError:  # closed or gone under us: no lag to tell
            continue
    return out


def _families(agent: Agent, f: metrics.Families) -> None:
    s, d = agent.stats, agent.delivery
    for name, key, doc in (
            ("read_lines", "lines_read", "lines read from files"),
            ("read_bytes", "bytes_read", "bytes read from files"),
            ("opened_files", "files_opened", "files opened"),
            ("closed_files", "files_closed", "files closed after rotation or deletion"),
            ("rotations", "rotations", "rotations and deletions seen"),
            ("truncations", "truncations", "copytruncate rotations seen"),
            ("adopted_rotated_files", "rotated_files_adopted",
             "rotated files found beside a path and read (after a restart, or created and rotated between two polls)"),
            ("idle_closed_files", "files_idle_closed",
             "files closed at their end while idle (opened again by path when they change)")):
        f.counter(name, doc, s[key])
    for name, key, doc in (
            ("shipped_records", "records_shipped", "records acknowledged by the transport"),
            ("acked_batches", "batches_acked", "batches acknowledged by the transport (position reports included)"),
            ("buffered_batches", "batches_buffered", "batches written to the disk buffer"),
            ("send_failures", "send_failures", "batch sends that failed or timed out"),
            ("buffer_write_failures", "buffer_write_failures",
             "batches the disk buffer could not take (held in memory)"),
            ("refused_batches", "batches_refused",
             "batches the transport refused for good (too large for the topic), set aside in data_dir/refused"),
            ("refused_records", "records_refused", "records in batches set aside as refused")):
        f.counter(name, doc, d.stats[key])
    f.histogram("ack_latency_seconds", "time from handing a batch to the transport to its acknowledgement",
                d.ack_latency)
    f.gauge("buffer_bytes", "bytes in the disk buffer", d.buffer.bytes)
    f.gauge("buffer_batches", "batches waiting in the disk buffer", d.buffered)
    f.gauge("inflight_batches", "batches sent and not yet acknowledged", d.inflight)
    f.gauge("reading_paused", "1 while reading is paused because the disk buffer is full or unwritable",
            float(agent.paused))
    f.gauge("open_files", "files held open", agent.files.held())
    f.gauge("open_files_limit", "log files held open at most (max_open_files within the process's limit)",
            agent.files.slots.limit)
    f.gauge("waiting_files", "log files found and waiting for a descriptor (the open files limit is reached)",
            len(agent.files.slots.waiting))
    f.gauge("idle_files", "log files closed while idle, watched by path", len(agent.files.idle))
    f.counters("redactions", "redactions by rule", "rule", agent.redactions, redaction_rules(agent.cfg))
    f.counters("errors", "input problems by kind (flagged or counted, never dropped silently)", "kind",
               agent.errors, ERROR_KINDS)
    f.gauges("file_lag_bytes", "bytes not read yet, per file", "path", _lag(agent))


def registry(agent: Agent) -> CollectorRegistry:
    return metrics.registry("shipper", lambda f: _families(agent, f))


async def healthz(agent: Agent) -> tuple[bool, str]:
    d = agent.delivery
    silent = time.monotonic() - (d.ticked_at or d.created_at)
    if silent > wedged_after_s(agent.cfg):
        return False, f"agent loop wedged: no turn for {silent:.0f} s"
    return True, "ok"


async def readyz(agent: Agent) -> tuple[bool, str]:
    d = agent.delivery
    if d.ticked_at is None:
        return False, "starting"
    if agent.paused:
        return False, (f"reading paused: disk buffer full or not writable ({d.buffer.bytes} bytes buffered, "
                       f"buffer_max_bytes {agent.cfg.buffer_max_bytes})")
    if d.backlog:
        return False, f"transport unavailable: {d.waiting} batches waiting in the disk buffer ({d.buffer.bytes} bytes)"
    return True, "ok"


async def serve(agent: Agent, address: str) -> asyncio.AbstractServer:
    return await metrics.serve(address, registry(agent), lambda: healthz(agent), lambda: readyz(agent))
