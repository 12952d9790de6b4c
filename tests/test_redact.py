"""Redaction before anything leaves the node."""

from __future__ import annotations

import pytest

from shipper.redact import BUILTINS, Redactor


@pytest.fixture
def r() -> Redactor:
    return Redactor(tuple(BUILTINS), (r"session=[0-9a-f]{8}",))


@pytest.mark.parametrize("text, expected, rule", [
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc.def", "Authorization: Bearer [REDACTED]", "bearer_token"),
    ("dial postgres://app:s3cr3t@db:5432/shop", "dial postgres://app:[REDACTED]@db:5432/shop", "url_password"),
    ("key AKIAIOSFODNN7EXAMPLE used", "key [REDACTED] used", "aws_access_key"),
    ("paid with 4111 1111 1111 1111 ok", "paid with [REDACTED] ok", "card_number"),
    ("mail jane.doe@example.com now", "mail [REDACTED] now", "email"),
    ("login session=deadbeef", "login [REDACTED]", "custom_0"),
])
def test_rules(r, text, expected, rule):
    assert r.apply(text) == (expected, True)
    assert r.counts == {rule: 1}


def test_numbers_failing_luhn_are_kept(r):
    text = "order 4111111111111112 at 1732442400123"
    assert r.apply(text) == (text, False)
    assert not r.counts


def test_unknown_rule():
    with pytest.raises(ValueError, match="unknown redaction rule"):
        Redactor(("ssn",), ())
