"""Talking to Kafka: the consumer-group source, topic creation and a health ping.

Positions live in the catalog, committed with the files; Kafka's committed
offsets are only a courtesy for lag monitoring. On every assignment the
consumer seeks to the catalog's positions, so a restart after a crash resumes
exactly after the last stored record.

Lag per partition (``lag``) is the partition's end (the last stable offset each
fetch response brings, or the end offsets asked for at assignment) minus the
position committed to the catalog; it needs no request of its own. The source
counts as connected while every assigned partition had a fetch answered
within ``FETCH_SILENCE_S`` (an idle consumer's fetches return every 500 ms).

A principal the cluster denies (authentication, the topic's or the group's ACLs)
is an AccessDeniedError, which stops the aggregator with one sentence; every
other error is an outage, retried (runtime.kafka).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, KafkaError, TopicAlreadyExistsError, TopicAuthorizationFailedError

from aggregator.source.base import Message
from lake.config import AggregatorConfig
from runtime.errors import BatchRefusedError, TransportError
from runtime.kafka import kind, refusal
from runtime.tls import client_ssl_context
from runtime.transport import KafkaSettings

log = logging.getLogger("loglake.aggregator")
FETCH_SILENCE_S = 30.0


def _client_args(kafka: KafkaSettings, cert: Path | None, key: Path | None) -> dict:
    return dict(bootstrap_servers=kafka.bootstrap_servers, security_protocol=kafka.security_protocol,
                ssl_context=client_ssl_context(kafka, cert, key), sasl_mechanism=kafka.sasl_mechanism,
                sasl_plain_username=kafka.sasl_username, sasl_plain_password=kafka.sasl_password,
                request_timeout_ms=kafka.request_timeout_ms)


def _unreachable(kafka: KafkaSettings, e: Exception) -> TransportError:
    """A denied principal as such (not retried); anything else as an outage of the cluster."""
    denied = refusal(e, f"topic {kafka.topic} at {kafka.bootstrap_servers}")
    if denied is not None:
        return denied
    return TransportError(f"cannot reach Kafka at {kafka.bootstrap_servers} ({e}); check that the broker runs, "
                          "that the CA signed its certificate and that our client certificate is accepted")


class _Listener(ConsumerRebalanceListener):
    def __init__(self, source: "KafkaSource") -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if revoked and self.source.on_revoke is not None:
            await self.source.on_revoke([str(tp.partition) for tp in revoked])

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.source.assigned(assigned)


class KafkaSource:
    def __init__(self, kafka: KafkaSettings, cfg: AggregatorConfig) -> None:
        self.kafka = kafka
        self.topic = kafka.topic
        self.on_revoke: Callable[[list[str]], Awaitable[None]] | None = None
        self._positions: Callable[[], dict[str, int]] = dict
        self._next: dict[int, int] = {}
        self._end: dict[int, int] = {}
        self._committed: dict[int, int] = {}
        self._consumer = AIOKafkaConsumer(
            **_client_args(kafka, cfg.tls_cert_file, cfg.tls_key_file),
            group_id=cfg.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=kafka.max_message_bytes, fetch_max_bytes=4 * kafka.max_message_bytes,
            client_id="loglake-aggregator", isolation_level="read_committed")

    async def start(self, positions: Callable[[], dict[str, int]]) -> None:
        self._positions = positions
        try:
            await self._consumer.start()
        except KafkaError as e:
            await self._consumer.stop()
            raise _unreachable(self.kafka, e) from None
        self._consumer.subscribe([self.topic], listener=_Listener(self))

    async def assigned(self, tps: list[TopicPartition]) -> None:
        stored = self._positions()
        self._next.clear()
        self._committed.clear()
        for tp in tps:
            if str(tp.partition) in stored:
                self._consumer.seek(tp, stored[str(tp.partition)])
            self._next[tp.partition] = self._committed[tp.partition] = await self._consumer.position(tp)
        ends = await self._consumer.end_offsets(tps) if tps else {}
        self._end = {tp.partition: off for tp, off in ends.items()}

    async def poll(self, timeout: float) -> list[Message]:
        """What the fetches brought. A denied principal raises AccessDeniedError (nothing will come); any other
        error is an outage, logged and polled again (the client reconnects by itself)."""
        # aiokafka (0.14) raises nothing for a subscribed topic the principal may not describe: the metadata
        # answer's TOPIC_AUTHORIZATION_FAILED is only logged and kept in the client's cluster metadata, and the
        # group assigns no partition of it. Nothing would ever come, so it is a denial like any other.
        if not self._consumer.assignment() and self.topic in self._consumer._client.cluster.unauthorized_topics:
            raise _unreachable(self.kafka, TopicAuthorizationFailedError(self.topic))
        try:
            batches = await self._consumer.getmany(timeout_ms=int(timeout * 1000), max_records=256)
        except KafkaError as e:
            if kind(e) is BatchRefusedError:
                # aiokafka has already moved past the record: retrying would skip it, so stop instead
                raise BatchRefusedError(f"a record in topic {self.topic} is larger than this aggregator may fetch "
                                        f"({e}); raise [kafka] max_message_bytes to at least the topic's "
                                        "max.message.bytes and start again") from None
            error = _unreachable(self.kafka, e)
            if not error.retriable:
                raise error from None
            log.warning("cannot fetch from Kafka; retrying", extra={"error": str(error)})
            await asyncio.sleep(timeout)
            return []
        out = []
        for tp, records in batches.items():
            for r in records:
                out.append(Message(str(tp.partition), r.offset, r.value))
            if records:
                self._next[tp.partition] = records[-1].offset + 1
        return out

    def caught_up(self) -> bool:
        return bool(self._end) and all(self._next.get(p, 0) >= end for p, end in self._end.items())

    def lag(self) -> dict[str, int]:
        out = {}
        for tp in self._consumer.assignment():
            # read_committed: the last stable offset is the end this consumer can reach
            end = self._consumer.last_stable_offset(tp)
            if end is None or end < 0:
                end = self._consumer.highwater(tp)
            end = max(end or 0, self._end.get(tp.partition, 0))
            out[str(tp.partition)] = max(0, end - self._committed.get(tp.partition, end))
        return out

    def unavailable(self) -> str | None:
        tps = self._consumer.assignment()
        if not tps:
            return f"no partition of topic {self.topic} assigned to this consumer (yet)"
        now_ms = time.time() * 1000
        silent = sorted(tp.partition for tp in tps if now_ms - (self._consumer.last_poll_timestamp(tp) or 0)
                        > FETCH_SILENCE_S * 1000)
        if silent:
            return (f"Kafka at {self.kafka.bootstrap_servers} answered no fetch for partition(s) "
                    f"{', '.join(map(str, silent))} of topic {self.topic} within {FETCH_SILENCE_S:g} s")
        return None

    async def commit(self, partition: str, next_offset: int) -> None:
        self._committed[int(partition)] = next_offset
        try:
            await self._consumer.commit({TopicPartition(self.topic, int(partition)): next_offset})
        except (CommitFailedError, KafkaError):
            pass  # the catalog holds the position; Kafka's copy is for lag monitoring only

    async def close(self) -> None:
        await self._consumer.stop()


async def ensure_topic(kafka: KafkaSettings, cert: Path | None, key: Path | None) -> bool:
    """Create the topic if missing (partitions and size limit from settings); True if created."""
    admin = AIOKafkaAdminClient(**_client_args(kafka, cert, key))
    try:
        await admin.start()
    except KafkaError as e:
        await admin.close()
        raise _unreachable(kafka, e) from None
    try:
        if kafka.topic in await admin.list_topics():
            return False
        topic = NewTopic(kafka.topic, kafka.partitions, kafka.replication_factor,
                         topic_configs={"max.message.bytes": str(kafka.max_message_bytes)})
        try:
            await admin.create_topics([topic])
        except TopicAlreadyExistsError:
            return False
        return True
    finally:
        await admin.close()


async def ping(kafka: KafkaSettings, cert: Path | None, key: Path | None) -> list[str]:
    admin = AIOKafkaAdminClient(**_client_args(kafka, cert, key))
    try:
        await admin.start()
        return await admin.list_topics()
    except KafkaError as e:
        raise _unreachable(kafka, e) from None
    finally:
        await admin.close()
