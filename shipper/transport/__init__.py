"""Where batches go: Kafka, or the embedded spool directory. Same bytes on both."""

from __future__ import annotations

from runtime.transport import TransportSettings
from shipper.config import ShipperConfig
from shipper.transport.base import Transport


def create(settings: TransportSettings, shipper: ShipperConfig) -> Transport:
    if settings.kafka is not None:
        from shipper.transport.kafka import KafkaTransport
        return KafkaTransport(settings.kafka, shipper)
    from shipper.transport.spool import SpoolTransport
    return SpoolTransport(settings.spool, shipper.node_name, shipper.data_dir)
