"""Process plumbing every component shares: the typed configuration loader, the error tree, durable
writes, JSON logs, the metrics server, TLS and transport settings, progress and shell completion.
Imports nothing else of loglake."""
