"""Query errors (see schemas.errors for the tree)."""

from __future__ import annotations

from schemas.errors import LoglakeError


class QueryError(LoglakeError):
    """The SQL or a filter is wrong, or stored data cannot be read."""
