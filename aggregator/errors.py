"""Aggregator errors (see schemas.errors for the tree)."""

from __future__ import annotations

from schemas.errors import LoglakeError


class EncryptionKeyError(LoglakeError):
    """The encryption key is missing, unreadable or does not open the files."""


class StorageError(LoglakeError):
    """Storage cannot be written or read (full disk, missing file, bad permissions)."""


class CatalogConflictError(LoglakeError):
    """Another process changed the catalog entries a job was replacing."""


class AuditError(LoglakeError):
    """The audit trail cannot be written or its key cannot be used."""
