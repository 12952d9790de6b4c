"""lake.selector: time expressions, levels, and the SQL and catalog test a selector gives. The SQL is run
against a small DuckDB table, so globs and hostile strings are checked by what they match, not by how the
text looks."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from lake import duck
from lake.selector import (MAX_TIME_NS, Selector, SelectorError, format_time, levels_sql, parse_levels,
                           parse_time)
from runtime.errors import ConfigError

NOW = 1_800_000_000_000_000_000  # 2027-01-15T08:00:00Z
S, M, H, D = 10**9, 60 * 10**9, 3600 * 10**9, 86400 * 10**9
T_2026_11_24_10 = int(datetime(2026, 11, 24, 10, tzinfo=timezone.utc).timestamp()) * S

# (namespace, pod, container, time in ns, severity_number); one row with no namespace
ROWS = [
    ("shop", "web-1", "nginx", T_2026_11_24_10, 9),
    ("shop", "web-12", "nginx", T_2026_11_24_10 + H, 13),
    ("shop", "api-1", "app", T_2026_11_24_10 + 2 * H, 17),
    ("pay", "api-1", "app", T_2026_11_24_10 + 3 * H, 21),
    (None, "static-pod", "etcd", T_2026_11_24_10 + 4 * H, 0),
    ("it's", "o'brien", "x", T_2026_11_24_10 + 5 * H, 5),
]


@pytest.fixture(scope="module")
def con():
    c = duck.connect()
    c.execute("CREATE TABLE logs (namespace VARCHAR, pod VARCHAR, container VARCHAR, time TIMESTAMP_NS, "
              "severity_number INTEGER)")
    c.executemany("INSERT INTO logs VALUES (?, ?, ?, make_timestamp_ns(?), ?)", ROWS)
    return c


def pods_where(con, sel: Selector) -> list[str]:
    """Pods the parameterised conditions match."""
    clauses, params = sel.where()
    where = " AND ".join(clauses) or "TRUE"
    return [r[0] for r in con.execute(f"SELECT pod FROM logs WHERE {where} ORDER BY time", params).fetchall()]


def pods_sql(con, sel: Selector) -> list[str]:
    """Pods the inlined condition matches."""
    return [r[0] for r in con.execute(f"SELECT pod FROM logs WHERE {sel.sql()} ORDER BY time").fetchall()]


# time expressions ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,ago", [
    ("15m", 15 * M), ("1h30m", 90 * M), ("7d", 7 * D), ("2d12h", 60 * H), ("90s", 90 * S),
    ("5ms", 5_000_000), ("1.5h", 90 * M), ("1w", 7 * D), ("0s", 0), (" 15m ", 15 * M), ("now", 0),
])
def test_durations_are_that_long_ago(text, ago):
    assert parse_time(text, NOW) == NOW - ago


@pytest.mark.parametrize("text,expected", [
    ("2026-11-24T10:00:00Z", T_2026_11_24_10),
    ("2026-11-24T10:00:00z", T_2026_11_24_10),
    ("2026-11-24T12:00:00+02:00", T_2026_11_24_10),
    ("2026-11-24T10:00:00", T_2026_11_24_10),                    # no zone: UTC
    ("2026-11-24", T_2026_11_24_10 - 10 * H),                    # a date: its midnight UTC
    ("2026-11-24T10:00:00.5Z", T_2026_11_24_10 + 500_000_000),
    ("2026-11-24T10:00:00.123456789Z", T_2026_11_24_10 + 123_456_789),   # nanoseconds kept
    ("2026-11-24T10:00:00.1234567891Z", T_2026_11_24_10 + 123_456_789),  # below a nanosecond: cut
])
def test_rfc3339_times(text, expected):
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["2026-11-24 10:00:00.5Z", "2026-11-24t10:00:00.5z"])
def test_rfc3339_fraction_with_the_other_separators(text):
    assert parse_time(text, NOW) == T_2026_11_24_10 + 500_000_000


def test_times_are_clamped_to_what_the_lake_holds():
    assert parse_time("100y", NOW) == 0                      # reaches back before 1970: from the beginning
    assert parse_time("1960-01-01", NOW) == 0
    assert parse_time("9" * 30 + "d", NOW) == 0              # huge counts neither overflow nor hang
    assert parse_time("2262-04-11T23:47:16.854775806Z", NOW) == MAX_TIME_NS
    with pytest.raises(SelectorError) as e:
        parse_time("2300-01-01", NOW)
    assert str(e.value) == ("time '2300-01-01' is after 2262-04-11T23:47:16.854775806Z, the latest time the lake "
                            "can represent (64-bit nanoseconds); give an earlier time")


@pytest.mark.parametrize("text", ["yesterday", "", "90", "-5m", "1h 30m", "2026-13-01", "'; DROP TABLE logs; --"])
def test_invalid_time_says_what_to_write(text):
    with pytest.raises(SelectorError) as e:
        parse_time(text, NOW)
    assert str(e.value) == (f"bad time expression {text!r}: use a duration ago like 15m, 1h30m or 7d, or an "
                            "RFC 3339 time like 2026-11-24T10:00:00Z")
    assert isinstance(e.value, ConfigError) and "\n" not in str(e.value)


@pytest.mark.parametrize("text", ["15min", "5M", "1e3s", "2hours", "3µs"])
def test_a_misspelt_duration_says_how_to_write_one(text):
    with pytest.raises(SelectorError) as e:
        parse_time(text, NOW)
    assert str(e.value) == (f"bad time expression {text!r}: a duration is numbers each with a unit "
                            "(ms, s, m, h, d, w or y), like 90s, 1h30m or 2d12h")


def test_format_time_is_rfc3339_with_nanoseconds_and_round_trips():
    assert format_time(None) == "-"
    assert format_time(0) == "1970-01-01T00:00:00.000000000Z"
    assert format_time(T_2026_11_24_10 + 42) == "2026-11-24T10:00:00.000000042Z"
    assert format_time(MAX_TIME_NS) == "2262-04-11T23:47:16.854775806Z"
    for ns in (0, 1, T_2026_11_24_10 + 123_456_789, NOW, MAX_TIME_NS):
        assert parse_time(format_time(ns), NOW) == ns


# levels ---------------------------------------------------------------------------------------------

def test_levels_and_their_aliases():
    assert parse_levels("error") == ((17, 20),)
    assert parse_levels("warn+") == ((13, 24),)
    assert parse_levels(" Warning , ERR ") == ((13, 16), (17, 20))
    assert parse_levels("crit,panic,critical") == ((21, 24),) * 3
    assert parse_levels("trace,debug,info,fatal+") == ((1, 4), (5, 8), (9, 12), (21, 24))
    assert parse_levels("") == () and parse_levels(" , ") == ()


@pytest.mark.parametrize("text,part", [("verbose", "verbose"), ("warn,nope", "nope"), ("1=1) OR (1", "1=1) or (1")])
def test_an_unknown_level_is_named(text, part):
    with pytest.raises(SelectorError) as e:
        parse_levels(text)
    assert str(e.value) == (f"unknown level {part!r}: use one of trace, debug, info, warn, error, fatal (add + "
                            "for that level and above, e.g. warn+)")


def test_levels_sql_selects_the_ranges(con):
    assert levels_sql(()) == "TRUE"
    assert levels_sql(((13, 24),)) == "(severity_number BETWEEN 13 AND 24)"
    sql = levels_sql(parse_levels("debug,error"))
    assert sql == "(severity_number BETWEEN 5 AND 8 OR severity_number BETWEEN 17 AND 20)"
    got = con.execute(f"SELECT pod FROM logs WHERE {sql} ORDER BY time").fetchall()
    assert [r[0] for r in got] == ["api-1", "o'brien"]
    got = con.execute(f"SELECT count(*) FROM logs WHERE {levels_sql(parse_levels('warn+'))}").fetchone()
    assert got == (3,)


# selectors ------------------------------------------------------------------------------------------

def test_where_is_parameterised():
    sel = Selector(namespace="shop", pod="web-*", since_ns=5, until_ns=9)
    assert sel.where() == (["coalesce(namespace, '') GLOB ?", "coalesce(pod, '') GLOB ?",
                            "time >= make_timestamp_ns(?)", "time < make_timestamp_ns(?)"], ["shop", "web-*", 5, 9])
    assert Selector().where() == ([], []) and Selector().sql() == "TRUE"


@pytest.mark.parametrize("sel,expected", [
    (Selector(namespace="shop"), ["web-1", "web-12", "api-1"]),
    (Selector(pod="web-?"), ["web-1"]),
    (Selector(pod="web-*", container="nginx"), ["web-1", "web-12"]),
    (Selector(pod="[ab]*"), ["api-1", "api-1"]),
    (Selector(namespace="*"), ["web-1", "web-12", "api-1", "api-1", "static-pod", "o'brien"]),  # null ns too
    (Selector(namespace=""), ["static-pod"]),
    (Selector(namespace="it's", pod="o'brien"), ["o'brien"]),
    (Selector(since_ns=T_2026_11_24_10 + H, until_ns=T_2026_11_24_10 + 3 * H), ["web-12", "api-1"]),  # [since, until)
])
def test_globs_and_window_match_the_same_rows_both_ways(con, sel, expected):
    assert pods_where(con, sel) == expected
    assert pods_sql(con, sel) == expected


@pytest.mark.parametrize("hostile", [
    "x' OR '1'='1", "'; DROP TABLE logs; --", "shop' --", "\\'", "*'", "' OR pod GLOB '*", "it''s",
])
def test_hostile_globs_are_values_never_sql(con, hostile):
    for sel in (Selector(namespace=hostile), Selector(pod=hostile), Selector(container=hostile)):
        assert pods_where(con, sel) == []
        assert pods_sql(con, sel) == []
    assert con.execute("SELECT count(*) FROM logs").fetchone() == (len(ROWS),)


def test_sql_quotes_every_literal_and_keeps_a_question_mark_in_a_glob():
    sel = Selector(namespace="a'b", pod="web-?", since_ns=7)
    assert sel.sql() == "coalesce(namespace, '') GLOB 'a''b' AND coalesce(pod, '') GLOB 'web-?' " \
                        "AND time >= make_timestamp_ns(7)"


def test_since_later_than_until_is_refused():
    with pytest.raises(SelectorError) as e:
        Selector(since_ns=10, until_ns=9)
    assert str(e.value) == "--since is later than --until; swap them"
    assert Selector(since_ns=9, until_ns=9).where()[1] == [9, 9]   # an empty window is allowed


def test_may_match_rules_files_out_from_catalog_facts():
    containers = ("shop/web-1/nginx", "shop/api-1/app")
    everything = Selector()
    assert everything.may_match((), (), 0, 0)
    window = Selector(since_ns=100, until_ns=200)
    assert not window.may_match(("shop",), containers, 10, 99)      # ends before since
    assert window.may_match(("shop",), containers, 10, 100)         # since is inclusive
    assert not window.may_match(("shop",), containers, 200, 300)    # until is exclusive
    assert window.may_match(("shop",), containers, 199, 300)
    assert Selector(pod="web-*").may_match(("shop",), containers, 0, 1)
    assert not Selector(pod="web-*", container="app").may_match(("shop",), containers, 0, 1)
    assert not Selector(namespace="pay").may_match(("shop",), containers, 0, 1)
    assert not Selector(namespace="shop").may_match((), (), 0, 1)
    # a record without a namespace is listed with an empty one, as the SQL's coalesce sees it
    assert Selector(namespace="").may_match((), ("/static-pod/etcd",), 0, 1)
    assert Selector(pod="static-*").may_match((), ("/static-pod/etcd",), 0, 1)


@pytest.mark.parametrize("sel", [Selector(namespace="shop"), Selector(pod="web-?"), Selector(pod="[!w]*"),
                                 Selector(container="ngin[a-z]"), Selector(namespace="")])
def test_may_match_agrees_with_the_sql(con, sel):
    for ns, pod, container, _, _ in ROWS:
        triple = f"{ns or ''}/{pod}/{container}"
        sql_match = con.execute(f"SELECT count(*) FROM logs WHERE coalesce(namespace, '') = ? AND pod = ? AND "
                                f"container = ? AND {sel.sql()}", [ns or "", pod, container]).fetchone()[0] > 0
        assert sel.may_match((ns,) if ns else (), (triple,), 0, 1) == sql_match, triple


def test_may_match_never_rules_out_a_file_the_sql_matches_with_an_escaped_glob(con):
    sel = Selector(pod="web\\-1")
    assert pods_sql(con, sel) == ["web-1"]
    assert sel.may_match(("shop",), ("shop/web-1/nginx",), 0, 1)


def test_describe():
    assert Selector().describe() == "everything"
    assert Selector(namespace="shop", container="app", since_ns=0).describe() == \
        "namespace=shop container=app time=[1970-01-01T00:00:00.000000000Z, -)"
