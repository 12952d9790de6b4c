"""Development PKI: a CA, a broker certificate and client certificates.

Everything is PEM because both ends read PEM natively: the Kafka broker with
``ssl.keystore.type=PEM`` and Python's ``ssl.SSLContext.load_cert_chain``.
This is for development and tests; production clusters bring their own PKI.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Names of the client identities the dev PKI issues; the broker sees them as
# the TLS principal (CN), which is what a production ACL would match on.
CLIENTS = ("shipper", "aggregator")
VALID_DAYS = 825


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "loglake dev"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted PKCS#8: the only private-key PEM form Kafka's PEM keystore reads.
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days)))


def make_ca(cn: str = "loglake dev CA", days: int = VALID_DAYS) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    cert = (_builder(_name(cn), _name(cn), key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def issue(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, cn: str, *,
          server: bool, days: int = VALID_DAYS) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Issue a leaf certificate. A server leaf also carries clientAuth because
    the broker talks to its own controller listener over the same mutual TLS."""
    key = _key()
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
    builder = (_builder(_name(cn), ca_cert.subject, key.public_key(), days)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _save_leaf(out: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey,
               ca_cert: x509.Certificate) -> Issued:
    cert_path, key_path = out / f"{name}.crt", out / f"{name}.key"
    cert_path.write_bytes(_pem_cert(cert))
    _write_private(key_path, _pem_key(key))
    # Kafka's PEM keystore wants key and chain in one file.
    _write_private(out / f"{name}.keystore.pem", _pem_key(key) + _pem_cert(cert) + _pem_cert(ca_cert))
    return Issued(cert_path, key_path)


def generate(out: Path, *, force: bool = False) -> dict[str, Issued]:
    """Create ca.crt, broker.*, shipper.* and aggregator.* in ``out``.

    Existing material is kept unless ``force``: regenerating the CA under a
    running broker would lock every client out.
    """
    out.mkdir(parents=True, exist_ok=True)
    if (out / "ca.crt").exists() and not force:
        return {n: Issued(out / f"{n}.crt", out / f"{n}.key") for n in ("ca", "broker", *CLIENTS)}
    ca_cert, ca_key = make_ca()
    (out / "ca.crt").write_bytes(_pem_cert(ca_cert))
    _write_private(out / "ca.key", _pem_key(ca_key))
    issued = {"ca": Issued(out / "ca.crt", out / "ca.key")}
    cert, key = issue(ca_cert, ca_key, "localhost", server=True)
    issued["broker"] = _save_leaf(out, "broker", cert, key, ca_cert)
    for client in CLIENTS:
        cert, key = issue(ca_cert, ca_key, client, server=False)
        issued[client] = _save_leaf(out, client, cert, key, ca_cert)
    return issued
