"""runtime.errors and runtime.kafka: the tree's behaviour on the class, what each aiokafka error becomes,
and the one sentence a CLI prints."""

from __future__ import annotations

import errno
import importlib
import pkgutil

import pytest
from aiokafka import errors as kafka_errors

from runtime import errors
from runtime.errors import AccessDeniedError, BatchRefusedError, LoglakeError, TransportError
from runtime.kafka import kind, refusal

PACKAGES = ("schemas", "runtime", "lake", "aggregator", "query", "shipper")


def every_error() -> list[type[LoglakeError]]:
    """Every class of the tree, wherever it is defined (every module of the project imported first)."""
    for package in PACKAGES:
        for info in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}."):
            if not info.name.endswith("__main__"):
                importlib.import_module(info.name)
    found, todo = [], [LoglakeError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_the_docstring_draws_the_whole_tree_with_each_flag() -> None:
    doc = errors.__doc__ or ""
    for cls in every_error():
        row = next((r for r in doc.splitlines() if f" {cls.__name__} " in r), None)
        assert row is not None, f"{cls.__name__} is not drawn in runtime/errors.py's tree"
        if cls is not LoglakeError:
            assert ("yes" if cls.retriable else "no") in row.split(cls.__name__, 1)[1].split()[:1], row


@pytest.mark.parametrize(("cls", "retriable"), [
    (TransportError, True), (BatchRefusedError, False), (AccessDeniedError, False),
    (errors.StorageError, True), (errors.CatalogConflictError, True), (errors.ConfigError, False),
    (errors.EncryptionKeyError, False), (errors.QueryError, False)])
def test_retriable_is_read_on_the_class(cls: type[LoglakeError], retriable: bool) -> None:
    assert cls.retriable is retriable and cls("x").retriable is retriable


@pytest.mark.parametrize(("error", "ours"), [
    (kafka_errors.MessageSizeTooLargeError, BatchRefusedError),
    (kafka_errors.RecordListTooLargeError, BatchRefusedError),
    (kafka_errors.TopicAuthorizationFailedError, AccessDeniedError),
    (kafka_errors.GroupAuthorizationFailedError, AccessDeniedError),
    (kafka_errors.SaslAuthenticationFailed, AccessDeniedError),
    # flagged not retriable by aiokafka, yet the next attempt usually succeeds: an outage
    (kafka_errors.RequestTimedOutError, TransportError),
    (kafka_errors.KafkaConnectionError, TransportError),
    (kafka_errors.NotLeaderForPartitionError, TransportError),
    # not this batch's fault (a bit flipped on the way, the node's clock far off): retried
    (kafka_errors.CorruptRecordException, TransportError),
    (kafka_errors.InvalidTimestampError, TransportError)])
def test_each_kafka_error_becomes_one_of_ours(error: type[Exception], ours: type[TransportError]) -> None:
    assert kind(error()) is ours
    found = refusal(error(), "topic t")
    if ours is TransportError:
        assert found is None, "an outage is reported and retried by the caller"
    else:
        assert type(found) is ours and "topic t" in str(found) and not found.retriable


def test_refusals_say_what_to_change() -> None:
    assert "max.message.bytes" in str(refusal(kafka_errors.MessageSizeTooLargeError(), "topic t"))
    assert "ACLs" in str(refusal(kafka_errors.TopicAuthorizationFailedError(), "topic t"))


def test_a_cli_error_is_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    assert errors.exit_with("loglake-x", errors.ConfigError("[shipper] include is empty")) == 1
    assert capsys.readouterr().err == "loglake-x: [shipper] include is empty\n"
    e = PermissionError(errno.EACCES, "Permission denied", "/var/lib/loglake")
    assert errors.sentence(e) == ("cannot use /var/lib/loglake (Permission denied); check the configured paths "
                                  "and their permissions (--debug shows where)")
