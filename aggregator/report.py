"""The compliance report: what is kept, what was deleted and why, what is held, and whether it all checks out.

Built from the catalog, the stored files and the audit trail; written as
Markdown for people and JSON (the same content) for tools.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from aggregator.config import Settings
from aggregator.retention import Remover
from aggregator.verify import Verification
from lake.audit import AuditLog, who
from lake.catalog.model import Tier
from lake.selector import format_time


def _iso(ns: int) -> str:
    return format_time(ns)[:19] + "Z"


def build(settings: Settings, remover: Remover, v: Verification, since_ns: int) -> dict[str, Any]:
    catalog = remover.catalog
    files = catalog.files()
    volume: dict[str, dict[str, int]] = defaultdict(dict)
    bytes_by_tier: dict[str, int] = defaultdict(int)
    for tier in (t.value for t in Tier):   # names, not Tier: the document's keys are plain strings
        tier_files = [f for f in files if f.tier == tier]
        bytes_by_tier[tier] = sum(f.bytes for f in tier_files)
        if tier_files:
            by_key = remover.keyring.by_key(tier_files, remover.storage.location)
            for ns, n in remover.writer.con.execute(
                    f"SELECT coalesce(namespace, '(none)'), count(*) FROM ({remover.writer.scan(by_key)}) "
                    "GROUP BY ALL ORDER BY 1").fetchall():
                volume[ns][tier] = n
    events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    queries: dict[str, int] = defaultdict(int)
    # loglake-query serve's access entries: per identity and namespace, requests answered and rows
    seen: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: {"requests": 0, "rows": 0}))
    refused: dict[str, int] = defaultdict(int)
    since_text = _iso(since_ns)
    for e in AuditLog.of(settings.aggregator, remover.catalog).entries():
        if e["time"] < since_text or e["action"] == "query-result":
            continue  # a query is counted once, by the entry written before it ran
        if e["action"] == "query":
            queries[who(e)] += 1
        elif e["action"] == "access":
            d = e["details"]
            if d.get("opened"):   # a tail's opening: its closing entry counts what it sent
                continue
            if d.get("status") != 200:
                refused[f"{d.get('identity', '(no credential)')} ({d.get('status')})"] += 1
                continue
            for ns, rows in (d.get("namespaces") or {"(aggregates)": d.get("rows", 0)}).items():
                seen[d["identity"]][ns or "(none)"]["requests"] += 1
                seen[d["identity"]][ns or "(none)"]["rows"] += rows
        elif e["action"] in ("retention", "erasure") and e["details"].get("status") == "started":
            continue  # the "done" entry carries the counts
        else:
            events[e["action"]].append({"seq": e["seq"], "time": e["time"], "actor": who(e), **e["details"]})
    return {
        "generated_at": _iso(time.time_ns()),
        "period": {"from": since_text, "to": _iso(time.time_ns())},
        "retention_policy": {"floor_days": settings.retention.floor_days,
                             "default_days": settings.retention.default_days,
                             "rules": [r.__dict__ for r in settings.retention.ordered()]},
        "kept": {"records_by_namespace_and_tier": volume, "bytes_by_tier": dict(bytes_by_tier),
                 "files": len(files), "records": sum(f.rows for f in files),
                 "oldest": _iso(min(f.min_time for f in files)) if files else None,
                 "newest": _iso(max(f.max_time for f in files)) if files else None},
        "actions": {k: v for k, v in events.items() if k in ("retention", "erasure")},
        "holds": {"active": [h.describe() for h in catalog.holds()],
                  "changes": events.get("hold-add", []) + events.get("hold-release", [])},
        "key_events": events.get("keys-rotate", []) + events.get("keys-destroy", []),
        "queries_by_actor": dict(queries),
        "served": {"seen_by_identity_and_namespace": {i: dict(by_ns) for i, by_ns in seen.items()},
                   "refused": dict(refused)},
        "verify": v.summary(),
    }


def to_markdown(doc: dict[str, Any]) -> str:
    kept, p = doc["kept"], doc["retention_policy"]
    out = [f"# loglake compliance report", "",
           f"Period: {doc['period']['from']} to {doc['period']['to']} (generated {doc['generated_at']}).", "",
           "## Data kept", "",
           f"{kept['records']:,} records in {kept['files']} files; oldest {kept['oldest'] or '-'}, "
           f"newest {kept['newest'] or '-'}.", "",
           "| namespace | hot | warm | cold |", "|---|---:|---:|---:|"]
    for ns, tiers in sorted(kept["records_by_namespace_and_tier"].items()):
        out.append(f"| {ns} | {tiers.get('hot', 0):,} | {tiers.get('warm', 0):,} | {tiers.get('cold', 0):,} |")
    b = kept["bytes_by_tier"]
    out += [f"| **bytes on storage** | {b.get('hot', 0):,} | {b.get('warm', 0):,} | {b.get('cold', 0):,} |", "",
            "## Retention policy", "",
            f"Compliance floor {p['floor_days']} days; default {p['default_days']} days. Rules, most specific first:", ""]
    for r in p["rules"]:
        sel = ", ".join(f"{k}={r[k]}" for k in ("namespace", "pod", "container", "level") if r[k]) or "everything"
        out.append(f"- **{r['name']}**: {sel} kept {r['days']} days" + (" (erasure rule)" if r["erasure"] else ""))
    out += ["", "## Retention and erasure actions", ""]
    actions = [(kind, a) for kind, items in doc["actions"].items() for a in items]
    if not actions:
        out.append("None in this period.")
    for kind, a in sorted(actions, key=lambda x: x[1]["seq"]):
        out.append(f"- {a['time']} {kind} by {a['actor']} (audit #{a['seq']}): {a['rows_deleted']:,} records "
                   f"deleted, {a['files_deleted']} files deleted, {a['files_rewritten']} rewritten, "
                   f"{a['files_reencrypted']} re-encrypted; keys destroyed: {', '.join(a['keys_destroyed']) or 'none'}"
                   + (f"; kept by holds: {a['kept_by_hold']}" if a.get("kept_by_hold") else ""))
    out += ["", "## Legal holds", ""]
    out += [f"- {h}" for h in doc["holds"]["active"]] or ["No active holds."]
    for c in doc["holds"]["changes"]:
        out.append(f"- {c['time']} hold {c['hold']} {'placed' if 'selector' in c and c.get('reason') else 'changed'}"
                   f" by {c['actor']}: {c.get('selector', '')} — {c.get('reason', '')} (audit #{c['seq']})")
    out += ["", "## Key events", ""]
    out += [f"- {k['time']} {k.get('event', '')} by {k['actor']}: {k.get('key_id') or k.get('master_key', '')} "
            f"(audit #{k['seq']})" for k in doc["key_events"]] or ["None in this period."]
    out += ["", "## Queries", ""]
    out += [f"- {who}: {n} queries" for who, n in sorted(doc["queries_by_actor"].items())] or ["None in this period."]
    out += ["", "## Who saw what (loglake-query serve)", ""]
    served = doc["served"]["seen_by_identity_and_namespace"]
    if served:
        out += ["| identity | namespace | requests | rows |", "|---|---|---:|---:|"]
        out += [f"| {ident} | {ns} | {n['requests']:,} | {n['rows']:,} |"
                for ident, by_ns in sorted(served.items()) for ns, n in sorted(by_ns.items())]
    else:
        out.append("None in this period.")
    out += [f"- refused: {who} {n} times" for who, n in sorted(doc["served"]["refused"].items())]
    v = doc["verify"]
    missing = [g for g in v["gaps"] if g["kind"] == "missing"]
    out += ["", "## Verification", "",
            f"**{'PASSED' if v['ok'] else 'FAILED'}**: {v['files_checked']} files checked against their sha256 "
            f"({len(v['file_problems'])} problems); audit trail of {v['audit_entries']} entries "
            f"({len(v['audit_problems'])} problems); {v['sources']} source files checked for completeness "
            f"({len(missing)} gaps never stored, {v['duplicated']} records stored more than once).", ""]
    out += [f"- {p}" for p in v["file_problems"] + v["audit_problems"] + v["duplicates"]]
    out += [f"- {g['kind']} bytes [{g['start']}, {g['end']}) of {g['source_id']} ({g['path']})" for g in v["gaps"]]
    return "\n".join(out) + "\n"
