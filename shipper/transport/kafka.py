"""Kafka transport: an idempotent aiokafka producer over mutual TLS.

``acks=all`` with idempotence: a batch is acknowledged only once every in-sync
replica has it, and retries cannot duplicate or reorder batches of one key.
The key is the container (namespace/pod/container), so one container's batches
land in one partition, in order. Batches are already zstd-compressed by the
shipper, so the producer adds no compression of its own.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from runtime.errors import TransportError
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
            raise TransportError(f"cannot connect to Kafka at {self.kafka.bootstrap_servers}: {e}; "
                                 "check bootstrap_servers, the CA and the client certificate") from None

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
            return await self._producer.send(self.kafka.topic, value, key=key)
        except KafkaError as e:
            raise TransportError(f"Kafka refused a batch for topic {self.kafka.topic}: {e}") from None

    async def close(self) -> None:
        await self._producer.stop()
