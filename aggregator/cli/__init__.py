"""loglake-aggregator's commands: run (the daemon and compaction), compliance, keys, topics."""
