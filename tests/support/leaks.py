"""Scanning text, Redis and files for the suite's card numbers and CVCs.

Written independently of ``service.domain.redaction`` so the vault's own
redactor is not trusted to check itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import redis

from tests.support.cards import ALL_TEST_CARDS

_SEPARATOR_BETWEEN_DIGITS = re.compile(r"(?<=\d)[ .\-]+(?=\d)")


def cards_in_text(text: str) -> list[str]:
    """Which test card numbers appear in ``text``, plain or grouped with spaces, dashes or dots."""
    squashed = _SEPARATOR_BETWEEN_DIGITS.sub("", text)
    return [pan for pan in ALL_TEST_CARDS if pan in squashed]


def cards_in_bytes(data: bytes) -> list[str]:
    return cards_in_text(data.decode("latin-1"))


def cvc_fields_in_json_lines(text: str) -> list[str]:
    """Log lines that carry a cvc-like key with a non-redacted value."""
    bad = []
    for line in text.splitlines():
        if re.search(r'"(cvc|cvv|cvv2|csc|security_code)"\s*:\s*"?\d{3,4}', line, re.IGNORECASE):
            bad.append(line[:200])
    return bad


def non_json_lines(text: str) -> list[str]:
    bad = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            json.loads(line)
        except ValueError:
            bad.append(line[:200])
    return bad


def redis_findings(client: redis.Redis) -> list[str]:
    """Card numbers in any key or string/hash/set value of this Redis (all databases in use)."""
    findings: list[str] = []
    for key in client.scan_iter(count=1000):
        for pan in cards_in_bytes(key):
            findings.append(f"key {key[:60]!r} contains {pan[:6]}...")
        kind = client.type(key)
        values: Iterable[bytes]
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"hash":
            values = [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == b"set":
            values = list(client.smembers(key))
        elif kind == b"list":
            values = list(client.lrange(key, 0, -1))
        elif kind == b"zset":
            values = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        else:
            values = []
        for value in values:
            for pan in cards_in_bytes(value):
                findings.append(f"value of {key[:60]!r} contains {pan[:6]}...")
    return findings


def file_findings(paths: Iterable[Path]) -> list[str]:
    findings = []
    for path in paths:
        if path.is_file():
            for pan in cards_in_bytes(path.read_bytes()):
                findings.append(f"{path} contains {pan[:6]}...")
    return findings
