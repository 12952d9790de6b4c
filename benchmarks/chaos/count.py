"""Drain and count: stop the pipeline and run it with ``--once`` until nothing new is stored, run
``loglake-aggregator verify``, then count the stored records by sequence number (lost, duplicated,
orphans, mangled), take a census of the files on disk and check the count against tampered views."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

from .components import Harness, child_env
from .writers import Writer

SEQ_RE = re.compile(rb"seq=(w\d+:\d+)\b")


def _connect(config: Path):
    import query
    return query.connect(str(config), child_env())


COUNT_SQL = """
WITH t AS (SELECT regexp_extract(body, 'seq=(w[0-9]+:[0-9]+)', 1) AS seq, body FROM {src})
SELECT seq, count(*) AS copies,
       count(*) FILTER (WHERE NOT ends_with(body, 'end=' || seq)
                        OR length(body) - length(replace(body, 'seq=', '')) <> 4) AS mangled
FROM t GROUP BY seq"""


def stored_count(config: Path) -> int:
    try:
        return _connect(config).execute("SELECT count(*) FROM logs").fetchone()[0]
    except Exception as e:  # noqa: BLE001 - no catalog yet
        if "no catalog" in str(e) or "lists no stored files" in str(e):
            return 0
        raise


def tally(con, src: str = "logs") -> tuple[dict[str, int], int, int, int]:
    """(copies per seq, orphan rows, mangled rows, total rows) over the relation ``src``."""
    copies, orphans, mangled, rows = {}, 0, 0, 0
    for seq, c, bad in con.execute(COUNT_SQL.format(src=src)).fetchall():
        rows += c
        if seq == "":
            orphans += c
        else:
            copies[seq] = c
            mangled += bad
    return copies, orphans, mangled, rows


def compare(written: dict[str, int], copies: dict[str, int]) -> tuple[list[tuple[str, int]], int, list[str]]:
    """(lost (writer, n) in order, duplicated rows, stored seqs nobody wrote)."""
    lost = [(w, n) for w, total in sorted(written.items(), key=lambda x: int(x[0][1:]))
            for n in range(total) if f"{w}:{n}" not in copies]
    dup = sum(c - 1 for c in copies.values() if c > 1)
    unexpected = []
    for seq in copies:
        w, n = seq.split(":")
        if w not in written or int(n) >= written[w]:
            unexpected.append(seq)
    return lost, dup, sorted(unexpected)


def census(sdir: Path, written: dict[str, int]) -> dict:
    """The seq tokens in every file on disk: each written line must be there exactly once."""
    seen: Counter[str] = Counter()
    files = 0
    for p in sorted((sdir / "logs").rglob("*")):
        if p.is_file():
            files += 1
            seen.update(m.decode() for m in SEQ_RE.findall(p.read_bytes()))
    expected = {f"{w}:{n}" for w, total in written.items() for n in range(total)}
    missing = sorted(expected - set(seen))
    extra = sorted(set(seen) - expected)
    twice = sorted(s for s, c in seen.items() if c > 1)
    return {"files": files, "tokens": sum(seen.values()), "ok": not (missing or extra or twice),
            "missing": missing[:10], "extra": extra[:10], "twice": twice[:10]}


def _ranges(lost: list[tuple[str, int]], limit: int = 30) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lost) and len(out) < limit:
        w, a = lost[i]
        b = a
        while i + 1 < len(lost) and lost[i + 1] == (w, b + 1):
            i += 1
            b += 1
        out.append(f"{w}:{a}" if a == b else f"{w}:{a}-{b}")
        i += 1
    return out


def drain(h: Harness, res: dict, config: Path, shipper_exe: str, aggregator_exe: str, max_rounds: int) -> None:
    """Stop the shipper and then the aggregator with SIGTERM, then run ``--once`` of each in rounds until
    a round stores nothing new. Figures and errors go into ``res`` as they come (an abort keeps them)."""
    for comp in ("shipper", "aggregator"):
        if not h.alive(comp):
            p = h.procs.get(comp)
            res["errors"].append(f"{comp} was not running at the drain (rc {p.returncode if p else None})")
    res["shipper_sigterm_rc"] = h.terminate("shipper", 40)
    res["aggregator_sigterm_rc"] = h.terminate("aggregator", 40)
    rounds = []
    prev = -1
    drained = False
    for rnd in range(max_rounds):
        h.check_time("drain")
        rc1, _ = h.run("shipper-once", [shipper_exe, "--config", str(config), "--once",
                                        "--log-level", "WARNING"], 300)
        rc2, _ = h.run("aggregator-once", [aggregator_exe, "--config", str(config), "--once",
                                           "--log-level", "WARNING"], 300)
        n = stored_count(config)
        rounds.append({"shipper_rc": rc1, "aggregator_rc": rc2, "stored": n})
        if rc1 or rc2:
            res["errors"].append(f"drain round {rnd + 1}: shipper --once exit {rc1}, aggregator --once exit {rc2}")
        if n == prev and not (rc1 or rc2):
            drained = True
            break
        prev = n
    res["drain_rounds"] = rounds
    res["drained"] = drained


def verify(h: Harness, config: Path, aggregator_exe: str) -> dict:
    """``loglake-aggregator verify``: its exit code, last line, whether it said OK, summary and findings."""
    rc, out = h.run("verify", [aggregator_exe, "--config", str(config), "verify"], 600)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return {"verify_rc": rc, "verify_last": last, "verify_ok": rc == 0 and last.strip() == "verify: OK",
            "verify_summary": [ln for ln in lines if not ln.startswith("  ")][:8],
            "verify_findings": [ln.strip() for ln in lines if ln.startswith("  ")][:20]}


def count(config: Path, sdir: Path, writers: list[Writer], samples: int = 10) -> dict:
    """Lost, duplicated, orphan and mangled records, with samples; plus the self-check."""
    written = {w.wid: w.written for w in writers}
    by_id = {w.wid: w for w in writers}
    rel = lambda p: os.path.relpath(p, sdir)  # noqa: E731
    try:
        con = _connect(config)
    except Exception as e:  # noqa: BLE001
        if "no catalog" not in str(e) and "lists no stored files" not in str(e):
            raise
        con = None
    if con is None:
        copies, orphans, mangled, rows = {}, 0, 0, 0
    else:
        copies, orphans, mangled, rows = tally(con)
    lost, dup, unexpected = compare(written, copies)
    out: dict = {"written": sum(written.values()), "written_by_writer": written, "stored": rows,
                 "stored_seqs": len(copies), "lost": len(lost), "duplicated": dup, "orphans": orphans,
                 "mangled": mangled, "unexpected": len(unexpected)}
    fates: Counter[str] = Counter()
    for w, n in lost:
        kind, _, fate, _ = by_id[w].where(n)
        fates[f"{fate}/{kind}"] += 1
    out["lost_by_fate"] = dict(sorted(fates.items()))
    out["lost_ranges"] = _ranges(lost)
    out["lost_samples"] = []
    for w, n in lost[:samples]:
        kind, path, fate, off = by_id[w].where(n)
        out["lost_samples"].append({"seq": f"{w}:{n}", "kind": kind, "file": rel(path), "fate": fate, "offset": off})
    dups = sorted((s for s, c in copies.items() if c > 1), key=lambda s: (int(s.split(":")[0][1:]), int(s.split(":")[1])))
    out["dup_samples"] = []
    dup_fates: Counter[str] = Counter()
    if dups and con is not None:
        for w_n in dups:
            w, n = w_n.split(":")
            kind, _, fate, _ = by_id[w].where(int(n)) if w in by_id and int(n) < written[w] else ("?", "", "?", 0)
            dup_fates[f"{fate}/{kind}"] += copies[w_n] - 1
        chosen = dups[:samples]
        rows_ = con.execute(
            "SELECT regexp_extract(body, 'seq=(w[0-9]+:[0-9]+)', 1) AS seq, source_path, source_id, source_offset "
            "FROM logs WHERE regexp_extract(body, 'seq=(w[0-9]+:[0-9]+)', 1) IN (SELECT unnest(?)) "
            "ORDER BY seq, source_path, source_offset", [chosen]).fetchall()
        stored_at: dict[str, list] = {}
        for seq, path, sid, off in rows_:
            stored_at.setdefault(seq, []).append({"source_path": rel(path) if path else None, "source_id": sid,
                                                  "source_offset": off})
        for seq in chosen:
            w, n = seq.split(":")
            kind, path, fate, off = by_id[w].where(int(n))
            out["dup_samples"].append({"seq": seq, "copies": copies[seq], "kind": kind, "written_to": rel(path),
                                       "fate": fate, "offset": off, "stored_at": stored_at.get(seq, [])})
    out["dup_by_fate"] = dict(sorted(dup_fates.items()))
    out["orphan_samples"] = []
    out["mangled_samples"] = []
    if con is not None and (orphans or mangled):
        out["orphan_samples"] = [
            {"source_path": rel(p), "source_offset": o, "body": b[:160]} for p, o, b in con.execute(
                "SELECT source_path, source_offset, body FROM logs WHERE regexp_extract(body, 'seq=(w[0-9]+:[0-9]+)', 1) = '' "
                "ORDER BY source_path, source_offset LIMIT ?", [samples]).fetchall()]
        out["mangled_samples"] = [
            {"source_path": rel(p), "source_offset": o, "body": b[:200]} for p, o, b in con.execute(
                "WITH t AS (SELECT regexp_extract(body, 'seq=(w[0-9]+:[0-9]+)', 1) AS seq, * FROM logs) "
                "SELECT source_path, source_offset, body FROM t WHERE seq <> '' AND (NOT ends_with(body, 'end=' || seq) "
                "OR length(body) - length(replace(body, 'seq=', '')) <> 4) ORDER BY 1, 2 LIMIT ?",
                [samples]).fetchall()]
    out["unexpected_samples"] = unexpected[:samples]
    out["self_check"] = self_check(con, written, copies, len(lost), dup) if con is not None else {
        "ok": None, "why": "nothing stored"}
    return out


def self_check(con, written: dict[str, int], copies: dict[str, int], lost: int, dup: int) -> dict:
    """Count again over tampered views of the lake: one stored row removed must be one more lost line;
    one source file's rows stored twice must be that many more duplicates."""
    result: dict = {}
    row = con.execute("SELECT source_id, source_offset, regexp_extract(body, 'seq=(w[0-9]+:[0-9]+)', 1) AS seq "
                      "FROM logs WHERE seq <> '' ORDER BY source_id, source_offset LIMIT 1").fetchone()
    if row is None:
        return {"ok": None, "why": "no stored row with a seq"}
    sid, off, seq = row
    # tampered views as subqueries: the lake's connection runs one read-only statement at a time
    c2, _, _, _ = tally(con, f"(SELECT * FROM logs WHERE NOT (source_id = '{sid}' AND source_offset = {int(off)}))")
    l2, d2, _ = compare(written, c2)
    want = (lost + 1, dup) if copies.get(seq) == 1 else (lost, dup - 1)
    result["row_removed"] = {"seq": seq, "lost": len(l2), "duplicated": d2, "expected": list(want),
                             "ok": (len(l2), d2) == want}
    sid2, n_seq = con.execute(
        "SELECT source_id, count(*) FILTER (WHERE regexp_extract(body, 'seq=(w[0-9]+:[0-9]+)', 1) <> '') AS n "
        "FROM logs GROUP BY source_id ORDER BY n DESC, source_id LIMIT 1").fetchone()
    c3, _, _, _ = tally(con, f"(SELECT * FROM logs UNION ALL SELECT * FROM logs WHERE source_id = '{sid2}')")
    l3, d3, _ = compare(written, c3)
    result["file_twice"] = {"source_id": sid2, "rows": n_seq, "lost": len(l3), "duplicated": d3,
                            "expected": [lost, dup + n_seq], "ok": (len(l3), d3) == (lost, dup + n_seq)}
    result["ok"] = result["row_removed"]["ok"] and result["file_twice"]["ok"]
    return result

