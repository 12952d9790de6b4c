"""The needle index (lake.needle_index): built with every file, kept exact through compaction, retention
and erasure, removed with its file, keyed by the file's data key, and never losing a match."""

from __future__ import annotations

import hashlib
import random
import re
import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest

from aggregator import config as agg_config
from aggregator.cli.run import main as aggregator
from aggregator.compaction import Compactor
from lake import keys, needle_index
from lake._needles import Builder
from lake.catalog.model import Tier
from lake.catalog.sqlite import SqliteCatalog
from lake.keys import DataKey
from lake.selector import Selector
from query import plan
from query.cli import main as query_cli
from query.connect import Lake
from query.filters import Filters
from tests.conftest import LAKE_START, fill_lake, write_config

NEEDLE = "kernel-panic-cafebabe"
AFTER_LAKE = (LAKE_START + 60 * 86400) * 1_000_000_000   # a clock when every day of the lake is cold
WHAT = {"command": "test"}


def message(node: str, container: str, r: int, i: int) -> str:
    """Realistic enough: a request id, a duration, a user; one line of the lake carries the needle."""
    rid = hashlib.md5(f"{node}{container}{r}{i}".encode()).hexdigest()[:20]
    if (node, container, r, i) == ("node-b", "app", 1, 778):   # an info line: no retention rule takes it
        return f"payment failed: {NEEDLE} order=8812734 req={rid}"
    return f"{node} {container} r{r} i{i} GET /api/v1/orders/{i * 7919 % 100000} req={rid} took {i * 7 % 997}ms"


@pytest.fixture
def lake(tmp_path):
    """2 nodes x 2 containers x 1,500 lines x 3 rounds, one second apart, in row groups of 2,048 rows."""
    config = write_config(tmp_path, aggregator={"parquet_row_group_size": 2048},
                          tiers={"warm_after_s": 0, "delete_grace_s": 0, "cold_after_s": 30 * 86400,
                                 "warm_row_group_size": 2048, "cold_row_group_size": 2048},
                          retention={"rules": [{"name": "pay-errors", "namespace": "pay", "level": "error", "days": 1,
                                                "erasure": True}], "default_days": 3650})
    return tmp_path, config, fill_lake(tmp_path, config, rounds=3, lines=1500, step_s=1, message=message)


def planned_and_scanned(lake: Lake, needle: str) -> tuple[int, int, plan.Plan]:
    """Matches of ``needle`` read through the needle index's plan, and over every row of every file."""
    f = Filters(Selector(), grep=needle)
    where, params = f.where()
    sql = f"SELECT count(*) AS n FROM logs WHERE {where}"
    chosen = plan.select(lake.catalog, f, lake.keyring.get)
    got = lake.query(chosen.files, sql, params, rows=chosen.row_ranges(), what=WHAT).column("n")[0].as_py()
    everything = plan.everything(lake.catalog)
    want = lake.query(everything.files, sql, params, what=WHAT).column("n")[0].as_py()
    return got, want, chosen


def needles(lake: Lake, rng: random.Random, n: int) -> list[str]:
    """Random substrings of stored bodies, cut anywhere: inside tokens, across separators, 1 to 40 long."""
    files = plan.everything(lake.catalog).files
    bodies = lake.query(files, "SELECT body FROM logs USING SAMPLE 400 ROWS", what=WHAT).column("body").to_pylist()
    out = [NEEDLE, "panic-cafe", "order=8812734 req=", f"{NEEDLE[3:]}"]
    while len(out) < n:
        body = rng.choice(bodies)
        i = rng.randrange(len(body))
        out.append(body[i:i + rng.randint(1, 40)])
    return out


def no_false_negatives(config: Path, seed: int, n: int = 60) -> list[str]:
    """The needles whose planned count differs from the full scan's (a false negative of the index)."""
    lake = Lake(str(config))
    try:
        wrong = []
        for needle in needles(lake, random.Random(seed), n):
            got, want, _ = planned_and_scanned(lake, needle)
            if got != want:
                wrong.append(f"{needle!r}: {got} planned, {want} stored")
        return wrong
    finally:
        lake.close()


def index_rows(tmp: Path) -> tuple[set[int], set[int], set[int]]:
    """(file ids, file ids with a needle filter, file ids with needle blocks) in the catalog."""
    db = sqlite3.connect(tmp / "lake" / "catalog.sqlite")
    try:
        return ({r[0] for r in db.execute("SELECT id FROM files")},
                {r[0] for r in db.execute("SELECT file_id FROM needle_filters")},
                {r[0] for r in db.execute("SELECT DISTINCT file_id FROM needle_blocks")})
    finally:
        db.close()


def compactor(config: Path) -> Compactor:
    settings = agg_config.load(str(config))
    return Compactor.open(settings, keys.master_for(settings.aggregator))


# what a needle asks of the index ------------------------------------------------

@pytest.mark.parametrize(("needle", "entries"), [
    ("kernel-panic-cafebabe", ["Pcafebabe", "Wpanic"]),        # 'kernel' may end a longer token, and is short
    ("fatal: kernel-panic-cafebabe in", ["Wcafebabe", "Wkernel", "Wpanic"]),
    ("3f2a9c1e-7b4d-4e1a-9c3b-2d1e0f9a8b7c", ["P2d1e0f9a", "S3f2a9c1e", "W4e1a", "W7b4d", "W9c3b"]),
    ("request_identifier=", ["Sentifier"]),
    ("cafebabe", []),                                           # one token: inside any longer one
    ("OutOfMemoryError", []),
    ("a b", []),                                                # short edges, nothing inside
    ("x y z", ["Wy"]),
    (" timeout ", ["Wtimeout"]),
    ("ünïcode-über", ["Wcode", "Wn"]),                         # non-ASCII separates tokens, in DuckDB too
    ("", []),
])
def test_a_needle_requires_only_what_its_occurrence_guarantees(needle: str, entries: list[str]) -> None:
    assert needle_index.required(needle) == entries


def body_entries(body: str) -> set[str]:
    """What the rule enters for a body, in Python: the native builder is held to it below."""
    out = set()
    for t in re.findall(needle_index.TOKEN, body, re.ASCII):
        out.add("W" + t)
        if len(t) >= needle_index.EDGE:
            out |= {"P" + t[:needle_index.EDGE], "S" + t[-needle_index.EDGE:]}
    return out


def test_every_substring_requires_only_entries_its_body_has() -> None:
    """20,000 random bodies over letters, digits, separators and non-ASCII, each cut at random: whatever a
    substring requires is in its body's entries (the index can never rule out a row that matches)."""
    rng = random.Random(7)
    alphabet = "ab01_Z9" * 3 + " -=:/.,\"\t" + "éü€"
    narrowed = 0
    for _ in range(20_000):
        body = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))
        i = rng.randrange(len(body))
        needle = body[i:i + rng.randint(1, 30)]
        need = set(needle_index.required(needle))
        assert need <= body_entries(body), (body, needle, need - body_entries(body))
        narrowed += bool(need)
    assert narrowed > 5_000, "the check must exercise needles the index narrows"


def filters_of(bodies: list[str], rows_per_group: int, key_hex: str, *, batch: int = 7,
               kind: pa.DataType = pa.string()) -> tuple[int, dict[int, tuple[bytes, bytes]]]:
    """The native builder's filters for ``bodies`` (row i in row group i // rows_per_group), fed in batches
    that are slices of one array, so each starts at a non-zero Arrow offset."""
    table = pa.table({"file_row_number": pa.array(range(len(bodies)), pa.int64()), "body": pa.array(bodies, kind)})
    groups = -(-len(bodies) // rows_per_group)
    blocks, sealed = needle_index.build(table.to_batches(max_chunksize=batch), groups, rows_per_group, key_hex)
    assert [b for b, _, _ in sealed] == list(range(blocks)), "every block has a row"
    return blocks, {b: (bits, tag) for b, bits, tag in sealed}


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()])
def test_the_native_builder_enters_what_the_rule_says_where_python_looks(kind: pa.DataType) -> None:
    """Random bodies (ASCII, separators, non-ASCII) over row groups of 5: every entry the rule gives a
    body is found in that body's row group at the positions Python computes; entries of other row
    groups almost never are (a blocked filter's false positives, about 1%)."""
    rng = random.Random(11)
    alphabet = "ab01_Z9xyQ" * 3 + " -=:/.,\"\t" + "éü€"
    bodies = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(200)]
    key_hex = needle_index.index_key(DataKey("k", bytes(32)), "00" * 16)
    blocks, rows = filters_of(bodies, 5, key_hex, kind=kind)
    groups = len(bodies) // 5
    assert all(len(bits) == groups * needle_index.BLOCK_BYTES for bits, _ in rows.values())
    elsewhere = trials = 0
    for i, body in enumerate(bodies):
        for entry in body_entries(body):
            holding = needle_index.groups_holding(key_hex, [entry], blocks, groups, rows)
            assert holding is not None and i // 5 in holding, (body, entry)
            others = {j // 5 for j, b in enumerate(bodies) if entry in body_entries(b)}
            elsewhere += len(set(holding) - others)
            trials += groups - len(others)
    assert trials > 10_000 and elsewhere / trials < 0.05


def test_the_whole_row_test_gives_what_testing_group_by_group_gives() -> None:
    """groups_holding tests every row group at once (one integer per row); random filters, some groups
    holding the entries, some full, some empty: the groups are those a test of each group's bits gives."""
    def by_group(key_hex: str, entries: list[str], blocks: int, groups: int, rows: dict) -> list[int]:
        candidates = set(range(groups))
        for entry in entries:
            block, bits = needle_index.position(key_hex, entry, blocks)
            row = rows[block][0]
            candidates = {g for g in candidates if all(row[g * needle_index.BLOCK_BYTES + b // 8] & (0x80 >> (b % 8))
                                                       for b in bits)}
        return sorted(candidates)

    rng = random.Random(5)
    key_hex = needle_index.index_key(DataKey("k", bytes(32)), "00" * 16)
    width = needle_index.BLOCK_BYTES
    found = 0
    for _ in range(1500):
        groups, blocks = rng.randint(1, 40), rng.randint(1, 4)
        entries = [f"W{rng.random()}" for _ in range(rng.randint(1, 4))]
        rows = {}
        for b in range(blocks):
            bits = bytearray(rng.choice((0, 0xFF, rng.getrandbits(8) & rng.getrandbits(8))) for _ in range(groups * width))
            for e in entries:
                block, positions = needle_index.position(key_hex, e, blocks)
                for g in (g for g in range(groups) if block == b and rng.random() < 0.4):
                    for x in positions:
                        bits[g * width + x // 8] |= 0x80 >> (x % 8)
            rows[b] = (bytes(bits), needle_index.seal(key_hex, b, bytes(bits)))
        got = needle_index.groups_holding(key_hex, entries, blocks, groups, rows)
        assert got == by_group(key_hex, entries, blocks, groups, rows), (groups, blocks, entries)
        found += len(got or ())
    assert found > 1000   # most cases hold some groups: the test is not of empty answers


def test_the_native_builder_refuses_what_it_cannot_index() -> None:
    key_hex = needle_index.index_key(DataKey("k", bytes(32)), "00" * 16)
    nulls = pa.table({"r": pa.array([0, 1], pa.int64()), "body": pa.array(["a", None])})
    with pytest.raises(ValueError, match="without nulls"):
        needle_index.build(nulls.to_batches(), 1, 10, key_hex)
    for row in (25, -1, -2**63):      # past the row groups, or negative (a huge row group if read unsigned)
        with pytest.raises(ValueError, match="outside the file's row groups"):
            needle_index.build(pa.table({"r": pa.array([0, row], pa.int64()), "body": ["a", "b"]}).to_batches(),
                               2, 10, key_hex)
    with pytest.raises(ValueError, match="at most"):
        needle_index.build([], 2**58, 10, key_hex)
    body = pa.array(["a", "b"])
    with pytest.raises(ValueError, match="shorter than its length"):
        Builder(groups=1, rows_per_group=10, edge=8, key_hex=key_hex).add(
            pa.array([0, 1], pa.int64()).buffers()[1], 2**62, *body.buffers()[1:], 0, 2, False)


def test_an_empty_file_has_one_empty_block_per_row_group() -> None:
    key_hex = needle_index.index_key(DataKey("k", bytes(32)), "00" * 16)
    blocks, rows = filters_of([], 5, key_hex)
    assert blocks == 1 and rows[0][0] == bytes(needle_index.BLOCK_BYTES)
    assert needle_index.groups_holding(key_hex, ["Wpanic"], blocks, 1, rows) == []


def test_positions_are_keyed_by_the_data_key_and_the_files_salt() -> None:
    a, b = DataKey("a", bytes(32)), DataKey("b", bytes([1]) * 32)
    assert needle_index.index_key(a, "01") != needle_index.index_key(b, "01")
    assert needle_index.index_key(a, "01") != needle_index.index_key(a, "02")
    assert needle_index.position(needle_index.index_key(a, "01"), "Wpanic", 1 << 20) != \
        needle_index.position(needle_index.index_key(b, "01"), "Wpanic", 1 << 20)


# through the real path ------------------------------------------------------------

def test_a_needle_reads_only_the_row_groups_that_hold_it(lake, capsys):
    tmp, config, n = lake
    grep = ["--config", str(config), "logs", "--since", "all", "--grep", NEEDLE, "--explain"]
    # hot files (minutes old) carry no index: read whole
    assert query_cli(grep) == 0
    captured = capsys.readouterr()
    assert captured.out.count(NEEDLE) == 1 and "chose 6 of 6 files, 12 of 12 row groups" in captured.err
    assert aggregator(["--config", str(config), "compact"]) == 0
    capsys.readouterr()
    assert query_cli(grep) == 0
    captured = capsys.readouterr()
    assert captured.out.count(NEEDLE) == 1
    assert "plan: needle index chose 1 of 4 files, 1 of 10 row groups" in captured.err
    # a regular expression is not looked up: every row group of the range is read
    assert query_cli([*grep[:-2], "panic-c.febabe", "--regex", "--explain"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count(NEEDLE) == 1 and "plan: catalog chose 4 of 4 files, 10 of 10 row groups" in captured.err


def test_the_index_never_loses_a_match_through_compaction_retention_and_erasure(lake, capsys):
    tmp, config, n = lake
    assert no_false_negatives(config, 1) == []                         # hot
    assert aggregator(["--config", str(config), "compact"]) == 0
    assert {f.tier for f in Lake(str(config)).catalog.files()} == {Tier.WARM}
    assert no_false_negatives(config, 2) == []                         # warm
    assert compactor(config).run(now_ns=AFTER_LAKE).by_tier == {"cold": 4}   # 2 partitions x 2 days (from 23:00)
    assert no_false_negatives(config, 3) == []                         # cold
    assert aggregator(["--config", str(config), "retention"]) == 0      # rewrites: pay errors expire
    assert "records deleted" in capsys.readouterr().out
    assert no_false_negatives(config, 4) == []
    assert aggregator(["--config", str(config), "erase", "--pod", "web-node-a", "--reason", "DSR-1"]) == 0
    assert no_false_negatives(config, 5) == []
    lake_ = Lake(str(config))
    got, want, chosen = planned_and_scanned(lake_, NEEDLE)
    assert got == want == 1 and chosen.how == "needle index"
    assert sum(len(g) for g in chosen.row_groups.values()) == 1
    lake_.close()
    assert aggregator(["--config", str(config), "verify"]) == 0


def test_the_index_is_removed_with_its_file(lake):
    tmp, config, n = lake
    hot, filters, blocks = index_rows(tmp)
    assert len(hot) == 6 and filters == blocks == set()
    assert aggregator(["--config", str(config), "compact"]) == 0
    warm, filters, blocks = index_rows(tmp)
    assert not warm & hot and warm == filters == blocks and len(warm) == 4
    assert aggregator(["--config", str(config), "erase", "--namespace", "pay", "--reason", "DSR-2"]) == 0
    final, filters, blocks = index_rows(tmp)
    assert final != warm and final == filters == blocks


def holder_of_the_needle(tmp: Path, config: Path) -> tuple[int, str, int]:
    """(file id, salt, blocks) of the one compacted file that holds the needle."""
    assert aggregator(["--config", str(config), "compact"]) == 0
    lake_ = Lake(str(config))
    _, _, chosen = planned_and_scanned(lake_, NEEDLE)
    lake_.close()
    (holder,) = chosen.files
    db = sqlite3.connect(tmp / "lake" / "catalog.sqlite")
    found = db.execute("SELECT f.id, n.salt, n.blocks FROM files f JOIN needle_filters n ON n.file_id = f.id "
                       "WHERE f.path = ?", (holder.path,)).fetchone()
    db.close()
    return found


@pytest.mark.parametrize("damage", [
    "UPDATE needle_blocks SET bits = zeroblob(length(bits)) WHERE file_id = ?",          # blanked
    "DELETE FROM needle_blocks WHERE file_id = ?",                                       # removed
    "UPDATE needle_blocks SET bits = substr(bits, 1, 64) WHERE file_id = ?",             # cut short
    # another file's rows put in its place: sealed, but not by this file's key
    "UPDATE needle_blocks SET bits = (SELECT o.bits FROM needle_blocks o WHERE o.file_id <> needle_blocks.file_id "
    "AND o.block = needle_blocks.block LIMIT 1), seal = (SELECT o.seal FROM needle_blocks o WHERE o.file_id <> "
    "needle_blocks.file_id AND o.block = needle_blocks.block LIMIT 1) WHERE file_id = ?",
])
def test_a_damaged_or_forged_index_hides_no_match(lake, damage):
    """Whoever can write the catalog but holds no data key cannot make --grep miss a stored line: a row that
    is not this file's sealed row makes the query read the file whole."""
    tmp, config, n = lake
    file_id, _, _ = holder_of_the_needle(tmp, config)
    db = sqlite3.connect(tmp / "lake" / "catalog.sqlite")
    db.execute(damage, (file_id,))
    db.commit()
    db.close()
    lake_ = Lake(str(config))
    got, want, chosen = planned_and_scanned(lake_, NEEDLE)
    lake_.close()
    assert got == want == 1
    assert max(len(g) for g in chosen.row_groups.values()) > 1, "the damaged file is read whole"


def test_a_wrong_index_sealed_with_the_key_is_caught_by_the_check(lake):
    """The no-false-negative check can fail: a filter blanked and sealed again with the file's own key (what
    a bug in the writer would store) hides the needle, and the check names it."""
    tmp, config, n = lake
    file_id, salt, blocks = holder_of_the_needle(tmp, config)
    settings = agg_config.load(str(config))
    db = sqlite3.connect(tmp / "lake" / "catalog.sqlite")
    key_id, groups = db.execute("SELECT key_id, row_groups FROM files WHERE id = ?", (file_id,)).fetchone()
    ring = keys.KeyRing(SqliteCatalog(tmp / "lake" / "catalog.sqlite"), keys.master_for(settings.aggregator))
    key_hex = needle_index.index_key(ring.get(key_id), salt)
    blank = bytes(groups * needle_index.BLOCK_BYTES)
    db.executemany("UPDATE needle_blocks SET bits = ?, seal = ? WHERE file_id = ? AND block = ?",
                   [(blank, needle_index.seal(key_hex, b, blank), file_id, b) for b in range(blocks)])
    db.commit()
    db.close()
    wrong = no_false_negatives(config, 1, n=4)
    assert wrong and wrong[0].startswith(repr(NEEDLE))


def test_a_file_without_an_index_is_read_whole(lake):
    tmp, config, n = lake
    assert aggregator(["--config", str(config), "compact"]) == 0
    db = sqlite3.connect(tmp / "lake" / "catalog.sqlite")
    db.execute("DELETE FROM needle_filters")     # as a file written before the index existed
    db.commit()
    db.close()
    lake_ = Lake(str(config))
    got, want, chosen = planned_and_scanned(lake_, NEEDLE)
    assert got == want == 1 and sum(len(g) for g in chosen.row_groups.values()) == 10
    lake_.close()


def test_the_catalog_holds_no_token_in_the_clear(lake):
    """What an index reveals without the data key: which bits are set. No token, hash of a token or salt-free
    digest of one is stored: the catalog's bytes hold neither the needle nor a request id nor their MD5."""
    tmp, config, n = lake
    assert aggregator(["--config", str(config), "compact"]) == 0
    raw = b"".join(p.read_bytes() for p in (tmp / "lake").glob("catalog.sqlite*"))
    rid = hashlib.md5(b"node-bapp1778").hexdigest()[:20]
    for secret in (NEEDLE, "cafebabe", rid, "8812734"):
        assert secret.encode() not in raw, secret
        assert hashlib.md5(("W" + secret).encode()).digest()[:8] not in raw, secret
    assert b"needle_blocks" in raw   # the index is there, and that is what was searched


def test_the_lookup_reads_the_rows_it_needs_by_key_and_scans_nothing(lake):
    """A needle costs one primary-key search per file and entry; a scan of needle_blocks (the whole index, the
    largest table of a big lake) is what a row-value IN compiled to, and is refused here."""
    tmp, config, n = lake
    assert aggregator(["--config", str(config), "compact"]) == 0
    lake_ = Lake(str(config))
    seen: list[tuple[str, list[object]]] = []
    real = lake_.catalog._db  # type: ignore[attr-defined]

    class Recording:
        def execute(self, sql: str, params: list[object] = ()):  # type: ignore[assignment]
            if "needle_blocks" in sql:
                seen.append((sql, list(params)))
            return real.execute(sql, params)

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    lake_.catalog._db = Recording()  # type: ignore[attr-defined]
    chosen = plan.select(lake_.catalog, Filters(Selector(), grep=NEEDLE), lake_.keyring.get)
    lake_.catalog._db = real  # type: ignore[attr-defined]
    assert chosen.how == "needle index" and seen
    for sql, params in seen:
        steps = [r[-1] for r in real.execute("EXPLAIN QUERY PLAN " + sql, params)]
        assert not any(s.startswith("SCAN") and ("needle_blocks" in s or s == "SCAN b") for s in steps), steps
        assert any("USING PRIMARY KEY" in s for s in steps), steps
    # the form it replaced scans: what this check would have failed on
    old = real.execute("EXPLAIN QUERY PLAN SELECT b.bits FROM needle_blocks b JOIN files f ON f.id = b.file_id "
                       "WHERE (f.path, b.block) IN (VALUES (?, ?), (?, ?))", ["x", 1, "y", 2]).fetchall()
    assert any(r[-1] == "SCAN b" for r in old)
    lake_.close()
