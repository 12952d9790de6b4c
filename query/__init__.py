"""loglake query: DuckDB over the stored logs.

    import query
    con = query.connect("loglake.toml")
    con.sql("SELECT container, count(*) FROM logs GROUP BY ALL").show()
"""

from query.connect import connect

__all__ = ["connect"]
