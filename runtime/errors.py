"""The error tree shared by every loglake component.

    LoglakeError              anything loglake reports to a person
     ├── ConfigError          the configuration file or an override is wrong
     ├── WireError            a batch is not a valid loglake batch (has .reason)
     └── TransportError       a transport cannot be reached or refused us

Components add their own subclasses of LoglakeError (aggregator: KeyError-like
``EncryptionKeyError``, ``StorageError``; query: ``QueryError``). Every message
is one sentence that says what happened and what to do about it.
"""

from __future__ import annotations


class LoglakeError(Exception):
    """Base of every error loglake reports; the CLIs print it without a traceback."""


class ConfigError(LoglakeError):
    pass


class TransportError(LoglakeError):
    pass


def sentence(e: LoglakeError | OSError) -> str:
    """What a CLI prints for an error that ends a command. A LoglakeError is already one sentence; an
    OSError that reaches a CLI is a path the configuration names and the system refuses."""
    if isinstance(e, LoglakeError):
        return str(e)
    where = f"{e.filename} " if e.filename else ""
    return (f"cannot use {where}({e.strerror or e}); check the configured paths and their permissions "
            "(--debug shows where)")


class EncryptionKeyError(LoglakeError):
    """The encryption key is missing, unreadable or does not open the files."""


class StorageError(LoglakeError):
    """Storage cannot be written or read (full disk, missing file, bad permissions)."""


class CatalogConflictError(LoglakeError):
    """Another process changed the catalog entries a job was replacing."""


class AuditError(LoglakeError):
    """The audit trail cannot be written or its key cannot be used."""


class CatalogValueError(LoglakeError):
    """A catalog value is not what loglake writes there (edited by hand, damaged, or written by another
    program); the message names the catalog, the row and the value."""


class QueryError(LoglakeError):
    """The SQL or a filter is wrong, or stored data cannot be read."""
