"""Benchmarks, the log generator (loggen) and the chaos suite (``python -m benchmarks.chaos``)."""
