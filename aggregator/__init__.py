"""loglake-aggregator: consumes batches and keeps them as encrypted Parquet."""
