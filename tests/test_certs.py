"""The development PKI: a CA that signs a broker and two client identities."""

from __future__ import annotations

import ssl

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from aggregator import certs


def test_generate_issues_a_verifiable_chain(tmp_path):
    issued = certs.generate(tmp_path)
    assert set(issued) == {"ca", "broker", "shipper", "aggregator"}
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    for name in ("broker", "shipper", "aggregator"):
        leaf = x509.load_pem_x509_certificate((tmp_path / f"{name}.crt").read_bytes())
        leaf.verify_directly_issued_by(ca)
        assert (tmp_path / f"{name}.key").stat().st_mode & 0o777 == 0o600
        # Python's TLS stack accepts the pair as a client identity
        ssl.create_default_context(cafile=str(tmp_path / "ca.crt")).load_cert_chain(
            tmp_path / f"{name}.crt", tmp_path / f"{name}.key")
    broker = x509.load_pem_x509_certificate((tmp_path / "broker.crt").read_bytes())
    san = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    shipper = x509.load_pem_x509_certificate((tmp_path / "shipper.crt").read_bytes())
    assert list(shipper.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # Kafka's PEM keystore: key first, then the chain
    pem = (tmp_path / "broker.keystore.pem").read_text()
    assert pem.index("PRIVATE KEY") < pem.index("CERTIFICATE") and pem.count("BEGIN CERTIFICATE") == 2


def test_existing_material_is_kept(tmp_path):
    certs.generate(tmp_path)
    before = (tmp_path / "ca.crt").read_bytes()
    certs.generate(tmp_path)
    assert (tmp_path / "ca.crt").read_bytes() == before
    certs.generate(tmp_path, force=True)
    assert (tmp_path / "ca.crt").read_bytes() != before
