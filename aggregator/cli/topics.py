"""loglake-aggregator topics create, and ``python -m aggregator.cli.topics ping`` (used by
deploy/kafka/kafka.sh to wait for the broker)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from aggregator import config
from aggregator.source.kafka import ping
from runtime.errors import ConfigError, TransportError
from runtime.transport import KafkaSettings


async def _topics(args: argparse.Namespace) -> None:
    settings = config.load(args.config)
    kafka = settings.transport.kafka
    if kafka is None:
        raise ConfigError("no [kafka] section in the config: the spool transport needs no topic")
    from aggregator.source.kafka import ensure_topic
    created = await ensure_topic(kafka, settings.aggregator.tls_cert_file, settings.aggregator.tls_key_file)
    print(f"topic {kafka.topic}: {'created with ' + str(kafka.partitions) + ' partitions' if created else 'exists'}")


def main(argv: list[str] | None = None) -> int:
    """``python -m aggregator.cli.topics ping``: exit 0 once the broker answers (used by deploy/kafka/kafka.sh)."""
    parser = argparse.ArgumentParser(prog="python -m aggregator.cli.topics")
    parser.add_argument("command", choices=["ping"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--certs", type=Path, required=True, help="directory made by 'loglake-aggregator certs'")
    args = parser.parse_args(argv)
    kafka = KafkaSettings(bootstrap_servers=args.bootstrap, ca_file=args.certs / "ca.crt", request_timeout_ms=5000)
    try:
        topics = asyncio.run(ping(kafka, args.certs / "aggregator.crt", args.certs / "aggregator.key"))
    except TransportError as e:
        print(e, file=sys.stderr)
        return 1
    print(" ".join(sorted(topics)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
