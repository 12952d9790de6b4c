"""The error tree shared by every loglake component.

    LoglakeError                   retriable  anything loglake reports to a person, in one sentence
     ├── ConfigError                   no     the configuration file or an override is wrong
 │    └── SelectorError            no     a time expression, glob or level a person typed (lake.selector)
     ├── TransportError               yes     a transport cannot be reached, or did not answer in time
     │    ├── BatchRefusedError        no     it refuses this batch for good (too large for the topic,
     │    │                                   invalid): the shipper sets it aside in refused/ and goes on
     │    └── AccessDeniedError        no     it refuses us (authentication, authorisation): stop, fix
     │                                        the credentials or ACLs, start again
     ├── StorageError                 yes     storage cannot be written or read (full disk, permissions)
     ├── EncryptionKeyError            no     a key is missing, unreadable or does not open the files
     ├── CatalogConflictError         yes     another process changed the entries a job was replacing
     ├── CatalogValueError             no     a catalog value is not what loglake writes there
     ├── AuditError                    no     the audit trail cannot be written or its key used
     ├── QueryError                    no     the SQL or a filter is wrong, or stored data cannot be read
     │    └── StoredColumnsDiffer      no     a scan met files of two schema versions: query.connect reads
     │                                        each file's columns once and runs the query again
     ├── Unauthenticated               no     a request to loglake-query serve proves no identity (HTTP 401)
     └── Forbidden                     no     an identity asked for what no role grants it (HTTP 403)

``http_status`` is how loglake-query serve answers the error: 400 for what a caller asked wrongly
(QueryError, SelectorError), 401 and 403 for who they are, 500 for the rest (the service's own trouble).

``retriable`` is behaviour, read on the class: the same operation may succeed if tried again later
(delivery retries it with backoff), or it will fail the same way until a person changes something.
Outside the tree, ``schemas.wire.WireError`` (a ValueError: the contract imports nothing) means a batch
is not a valid loglake batch; the aggregator quarantines it and never retries it.
"""

from __future__ import annotations

import sys
from typing import ClassVar


class LoglakeError(Exception):
    """Base of every error loglake reports; the CLIs print it without a traceback."""
    retriable: ClassVar[bool] = False
    http_status: ClassVar[int] = 500


class ConfigError(LoglakeError):
    pass


class TransportError(LoglakeError):
    retriable = True


class BatchRefusedError(TransportError):
    retriable = False


class AccessDeniedError(TransportError):
    retriable = False


def exit_with(prog: str, e: LoglakeError | OSError) -> int:
    """How a CLI ends on an error: one line ``prog: sentence`` on stderr, exit status 1 (``--debug``
    re-raises before this, for the traceback)."""
    print(f"{prog}: {sentence(e)}", file=sys.stderr)
    return 1


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
    retriable = True


class CatalogConflictError(LoglakeError):
    """Another process changed the catalog entries a job was replacing."""
    retriable = True


class AuditError(LoglakeError):
    """The audit trail cannot be written or its key cannot be used."""


class CatalogValueError(LoglakeError):
    """A catalog value is not what loglake writes there (edited by hand, damaged, or written by another
    program); the message names the catalog, the row and the value."""


class QueryError(LoglakeError):
    """The SQL or a filter is wrong, or stored data cannot be read."""
    http_status = 400


class Unauthenticated(LoglakeError):
    """A request without a credential, or with one that does not prove an identity."""
    http_status = 401


class Forbidden(LoglakeError):
    """An authenticated identity asked for what no role grants it."""
    http_status = 403
