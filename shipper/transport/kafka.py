"""Kafka transport: an idempotent aiokafka producer over mutual TLS.

``acks=all`` with idempotence: a batch is acknowledged only once every in-sync
replica has it, and retries cannot duplicate or reorder batches of one key.
The key is the container (namespace/pod/container), so one container's batches
land in one partition, in order. Batches are already zstd-compressed by the
shipper, so the producer adds no compression of its own.

Errors come out as the error tree has them (runtime.kafka): a batch the topic
refuses for good is a BatchRefusedError, a denied principal an
AccessDeniedError, anything else a TransportError that delivery retries.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from runtime.errors import TransportError
from runtime.kafka import kind, refusal
from runtime.tls import client_ssl_context
from runtime.transport import KafkaSettings
from shipper.config import ShipperConfig


class KafkaTransport:
    name = "kafka"

    def __init__(self, kafka: KafkaSettings, shipper: ShipperConfig) -> None:
        self.kafka = kafka
        self.shipper = shipper
        self._producer = self._new_producer()

    def _new_producer(self) -> AIOKafkaProducer:
        kafka, shipper = self.kafka, self.shipper
        return AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap_servers,
            security_protocol=kafka.security_protocol,
            ssl_context=client_ssl_context(kafka, shipper.tls_cert_file, shipper.tls_key_file),
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=kafka.sasl_password,
            acks="all",
            enable_idempotence=True,
            compression_type=None,
            max_request_size=kafka.max_message_bytes,
            request_timeout_ms=kafka.request_timeout_ms,
            linger_ms=0,
            client_id=f"loglake-shipper-{shipper.node_name}",
        )

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaError as e:
            await self._producer.stop()
            # a denied principal stops the shipper (not retried), in the same words as an unreachable cluster
            raise kind(e)(f"cannot connect to Kafka at {self.kafka.bootstrap_servers}: {e}; check bootstrap_servers, "
                          "the CA and the client certificate or SASL credentials") from None

    async def reset(self) -> None:
        """A new producer (new producer id) after an outage: batches that expired
        inside the old one leave its sequence numbers in a state it may not recover
        from, and the disk buffer holds everything it had not delivered."""
        old, self._producer = self._producer, self._new_producer()
        try:
            await asyncio.wait_for(old.stop(), 2)
        except (asyncio.TimeoutError, KafkaError):
            pass
        await self.start()

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        try:
            sent = await self._producer.send(self.kafka.topic, value, key=key)
        except KafkaError as e:
            raise self._error(e) from None
        # The broker's answer, with its error as the tree has it; cancelling it cancels the send's.
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def settle(f: asyncio.Future[object]) -> None:
            if answer.done():
                return
            if f.cancelled():
                answer.cancel()
            elif (e := f.exception()) is not None:
                answer.set_exception(self._error(e))
            else:
                answer.set_result(None)

        sent.add_done_callback(settle)
        answer.add_done_callback(lambda a: sent.cancel() if a.cancelled() else None)
        return answer

    def _error(self, e: BaseException) -> TransportError:
        return refusal(e, f"topic {self.kafka.topic}") or TransportError(
            f"Kafka did not take a batch for topic {self.kafka.topic}: {e!r}")

    async def close(self) -> None:
        await self._producer.stop()
