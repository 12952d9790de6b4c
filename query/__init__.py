"""loglake query: DuckDB over the stored logs.

    import query
    con = query.connect("loglake.toml")
    rows = con.execute("SELECT container, count(*) FROM logs GROUP BY ALL").fetchall()
"""

from query.connect import connect

__all__ = ["connect"]
