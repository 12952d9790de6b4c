"""What a scenario's figures say: its problems, a failure message for tests, the Markdown table
and the JSON file."""

from __future__ import annotations

import json
import time
from pathlib import Path


def problems(r: dict) -> list[str]:
    """Why a scenario's result is not "every line exactly once, and verify says so"."""
    if "lost" not in r:
        return [*r.get("errors", []), "not counted"]
    out = []
    if r["lost"]:
        out.append(f"{r['lost']} lost (first: {', '.join(r['lost_ranges'][:8])}; by file fate: {r['lost_by_fate']})")
    if r["duplicated"]:
        out.append(f"{r['duplicated']} duplicated (first: {', '.join(d['seq'] for d in r['dup_samples'][:8])}; "
                   f"by file fate: {r['dup_by_fate']})")
    if r["orphans"]:
        out.append(f"{r['orphans']} rows without a seq")
    if r["mangled"]:
        out.append(f"{r['mangled']} mangled rows")
    if r["unexpected"]:
        out.append(f"{r['unexpected']} stored seqs never written")
    if not r.get("agrees"):
        out.append(f"verify says {r.get('verify_last')!r} (exit {r.get('verify_rc')}) with {r['lost']} lost and "
                   f"{r['duplicated']} duplicated")
    if not r.get("census", {}).get("ok"):
        out.append(f"census of the files on disk disagrees with the writers' ledger: {r.get('census')}")
    if r.get("self_check", {}).get("ok") is False:
        out.append(f"self-check failed: {r['self_check']}")
    if not r.get("drained"):
        out.append("the drain did not settle")
    out += r.get("errors", [])
    return out


def describe(r: dict) -> str:
    """A failure message for tests: the figures and the first lost/duplicated seqs with their files."""
    lines = [f"scenario {r['scenario']} ({r['transport']}, seed {r.get('seed')}, kills {r.get('kills')}, "
             f"rotations {r.get('rotations')}): written {r.get('written')}, stored {r.get('stored')}, "
             f"lost {r.get('lost')}, duplicated {r.get('duplicated')}, orphans {r.get('orphans')}, "
             f"verify {r.get('verify_last')!r}"]
    lines += [f"  - {p}" for p in r.get("problems", [])]
    for s in r.get("lost_samples", []):
        lines.append(f"  lost {s['seq']} ({s['kind']}) written to {s['file']} [{s['fate']}] at offset {s['offset']}")
    for s in r.get("dup_samples", []):
        at = "; ".join(f"{a['source_path']}@{a['source_offset']}" for a in s["stored_at"])
        lines.append(f"  duplicated {s['seq']} x{s['copies']} ({s['kind']}) written to {s['written_to']} "
                     f"[{s['fate']}] at {s['offset']}; stored at {at}")
    lines.append(f"  data: {r.get('dir')}")
    return "\n".join(lines)


def jsonable(v: object) -> object:
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def table(results: list[dict]) -> str:
    head = ("scenario", "transport", "cycles", "kills s/a/b", "rotations ren/ct", "written", "stored", "lost",
            "dup", "orphan/mangled", "verify", "verify agrees", "self-check", "time")
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        k = r.get("kills", {})
        rot = r.get("rotations", {})
        sc = r.get("self_check", {}).get("ok")
        rows.append("| " + " | ".join(str(x) for x in (
            r["scenario"], r["transport"], r["cycles"],
            f"{k.get('shipper', 0)}/{k.get('aggregator', 0)}/{k.get('broker', 0)}",
            f"{rot.get('rename', 0)}/{rot.get('copytruncate', 0)}",
            r.get("written", "-"), r.get("stored", "-"), r.get("lost", "-"), r.get("duplicated", "-"),
            f"{r.get('orphans', '-')}/{r.get('mangled', '-')}",
            "OK" if r.get("verify_ok") else ("FAILED" if "verify_ok" in r else "-"),
            {True: "yes", False: "NO", None: "-"}[r.get("agrees")],
            {True: "ok", False: "FAILED", None: "-"}[sc],
            f"{r['durations_s'].get('total', 0):.0f} s")) + " |")
    return "\n".join(rows)


def save(path: Path, doc: dict, t0: float) -> None:
    """Write the run's JSON (after every scenario, so an interrupted run keeps what it finished)."""
    doc["duration_s"] = round(time.monotonic() - t0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")

