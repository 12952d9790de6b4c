"""Redaction before anything leaves the node.

Built-in rules (all on by default, chosen by name) and custom regexes; every
match becomes ``[REDACTED]`` (a bearer token keeps its scheme word, a URL its
user name) and is counted per rule. Card numbers are redacted only when they
pass the Luhn check, so order ids and timestamps are left alone.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

MASK = "[REDACTED]"


def _luhn_ok(digits: str) -> bool:
    total, alt = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if alt:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        alt = not alt
    return total % 10 == 0


# Digits → "d", the separators cards are written with → themselves, anything else → "x":
# a card-shaped run then shows up as a plain substring, found at C speed, while a
# regex scan over every digit of a JSON line costs several microseconds.
_SHAPE = str.maketrans({**{chr(c): "x" for c in range(128)}, **{d: "d" for d in "0123456789"}, " ": " ", "-": "-"})
_CARD_SHAPES = ("d" * 13, "dddd dddd dddd", "dddd-dddd-dddd", "dddd dddddd ddddd", "dddd-dddddd-ddddd")


def _card_shaped(text: str) -> bool:
    shape = text.translate(_SHAPE)
    return any(s in shape for s in _CARD_SHAPES)


_AWS_PREFIXES = ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA")


def _aws_shaped(text: str) -> bool:
    return "A" in text and any(p in text for p in _AWS_PREFIXES)


def _card(m: re.Match[str]) -> str | None:
    digits = re.sub(r"[ -]", "", m.group(0))
    return MASK if 13 <= len(digits) <= 19 and _luhn_ok(digits) else None


# name -> (quick test: a substring or a predicate, pattern, replacement: template or function returning None to keep)
BUILTINS: dict[str, tuple[str | Callable[[str], bool], str, str | Callable[[re.Match[str]], str | None]]] = {
    "bearer_token": ("earer", r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]{8,}=*", r"\1 " + MASK),
    "url_password": ("://", r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/\s@]+:)[^@/\s]+@", r"\1" + MASK + "@"),
    "aws_access_key": (_aws_shaped, r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b", MASK),
    "card_number": (_card_shaped, r"\b\d(?:[ -]?\d){12,18}\b", _card),
    "email": ("@", r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b", MASK),
}


class Redactor:
    def __init__(self, builtins: tuple[str, ...], custom: tuple[str, ...]) -> None:
        unknown = [b for b in builtins if b not in BUILTINS]
        if unknown:
            raise ValueError(f"unknown redaction rule(s) {', '.join(unknown)}; known: {', '.join(BUILTINS)}")
        self._rules: list[tuple[str, str | Callable[[str], bool] | None, re.Pattern[str], object]] = [
            (name, BUILTINS[name][0], re.compile(BUILTINS[name][1]), BUILTINS[name][2]) for name in builtins]
        self._rules += [(f"custom_{i}", None, re.compile(p), MASK) for i, p in enumerate(custom)]
        self.counts: Counter[str] = Counter()

    def __bool__(self) -> bool:
        return bool(self._rules)

    def apply(self, text: str) -> tuple[str, bool]:
        """The redacted text and whether anything was redacted."""
        changed = False
        for name, quick, pattern, repl in self._rules:
            if quick is not None and not (quick(text) if callable(quick) else quick in text):
                continue
            if callable(repl):
                hits = 0

                def sub(m: re.Match[str], repl=repl) -> str:
                    nonlocal hits
                    out = repl(m)
                    if out is None:
                        return m.group(0)
                    hits += 1
                    return out
                text = pattern.sub(sub, text)
            else:
                text, hits = pattern.subn(repl, text)
            if hits:
                self.counts[name] += hits
                changed = True
        return text, changed
