"""The storage engine: the catalog, data keys, tiers and their Parquet layout, DuckDB over encrypted
files, the trace index, selectors, legal holds and the audit trail. The aggregator writes through it
and loglake-query reads through it; it imports neither."""
