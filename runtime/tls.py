"""TLS for Kafka clients: the broker verified against the configured CA, and the client's own
certificate for mutual TLS."""

from __future__ import annotations

import ssl
from pathlib import Path

from runtime.errors import ConfigError
from runtime.transport import KafkaSettings


def client_ssl_context(kafka: KafkaSettings, cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext | None:
    """TLS context for a Kafka client: verify the broker against ``ca_file`` and,
    for mutual TLS, present ``cert_file``/``key_file``."""
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    for label, p in (("kafka ca_file", kafka.ca_file), ("client certificate", cert_file), ("client key", key_file)):
        if p is not None and not Path(p).is_file():
            raise ConfigError(f"{label} {p} does not exist; run 'loglake-aggregator certs --out DIR' for a dev PKI "
                              "or point the setting at your cluster's files")
    ctx = ssl.create_default_context(cafile=str(kafka.ca_file) if kafka.ca_file else None)
    if cert_file or key_file:
        if not (cert_file and key_file):
            raise ConfigError("mutual TLS needs both tls_cert_file and tls_key_file")
        try:
            ctx.load_cert_chain(str(cert_file), str(key_file))
        except ssl.SSLError as e:
            raise ConfigError(f"cannot load client certificate {cert_file} with key {key_file}: {e.reason or e}") from None
    return ctx
