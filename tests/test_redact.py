"""Redaction before anything leaves the node (through the native core)."""

from __future__ import annotations

import pytest

from schemas.record import FLAG_REDACTED
from shipper.config import ShipperConfig
from shipper.records import processing
from tests.conftest import build_records

CUSTOM = (r"session=[0-9a-f]{8}",)  # with every built-in rule, the default


@pytest.mark.parametrize("text, expected, rule", [
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc.def", "Authorization: Bearer [REDACTED]", "bearer_token"),
    ("Authorization: BEARER eyJhbGciOiJIUzI1NiJ9.abc.def", "Authorization: BEARER [REDACTED]", "bearer_token"),
    ("dial postgres://app:s3cr3t@db:5432/shop", "dial postgres://app:[REDACTED]@db:5432/shop", "url_password"),
    ("key AKIAIOSFODNN7EXAMPLE used", "key [REDACTED] used", "aws_access_key"),
    ("paid with 4111 1111 1111 1111 ok", "paid with [REDACTED] ok", "card_number"),
    ("mail jane.doe@example.com now", "mail [REDACTED] now", "email"),
    ("login session=deadbeef", "login [REDACTED]", "custom_0"),
])
def test_rules(text, expected, rule):
    b = build_records([text.encode()], redact_patterns=CUSTOM)
    (r,) = b.records
    assert (r["body"], r["flags"] & FLAG_REDACTED) == (expected, FLAG_REDACTED)
    assert b.redactions == {rule: 1}


def test_numbers_failing_luhn_are_kept():
    text = "order 4111111111111112 at 1732442400123"
    b = build_records([text.encode()], redact_patterns=CUSTOM)
    assert (b.records[0]["body"], b.records[0]["flags"]) == (text, 0)
    assert not b.redactions


def test_unknown_rule():
    with pytest.raises(ValueError, match="unknown redaction rule"):
        processing(ShipperConfig(node_name="n1", redact=("ssn",)))


def test_dashed_card_is_redacted_at_every_offset():
    # the native quick test samples every 13th byte: a dashed card must be found whichever of its bytes
    # (digit or dash) are the sampled ones
    card = "4111-1111-1111-1111"
    texts = [f"{'x' * pad} cc={card} ok" for pad in range(14)]
    b = build_records([t.encode() for t in texts], redact_patterns=CUSTOM)
    assert [r["body"] for r in b.records] == [t.replace(card, "[REDACTED]") for t in texts]
    assert all(r["flags"] & FLAG_REDACTED for r in b.records)
    assert b.redactions == {"card_number": len(texts)}


def test_card_beside_another_number_is_redacted_and_the_number_kept():
    # the card regex's run "2 4111 1111 1111 1111" fails the Luhn check as a whole; the card inside it passes
    b = build_records([b"qty 2 4111 1111 1111 1111 ok"], redact_patterns=CUSTOM)
    (r,) = b.records
    assert (r["body"], r["flags"] & FLAG_REDACTED) == ("qty 2 [REDACTED] ok", FLAG_REDACTED)
    assert b.redactions == {"card_number": 1}
