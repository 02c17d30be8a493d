"""Scanning text, Redis and files for the suite's card numbers and CVCs.

Written independently of ``service.domain.redaction`` so the vault's own
redactor is not trusted to check itself.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import redis

from tests.support.cards import ALL_TEST_CARDS

_SEPARATOR_BETWEEN_DIGITS = re.compile(r"(?<=\d)[ .\-]+(?=\d)")
_DIGIT_RUN = re.compile(r"\d{12,}")
_REQUEST_ID = re.compile(r"req_[0-9a-f]+")

#: Card numbers tests generate at run time (never committed); the scans look for them too.
_GENERATED: set[str] = set()


def watch_generated_cards(numbers: Iterable[str]) -> None:
    """Make every scan of this session (and the end-of-session guard) look for these numbers too."""
    _GENERATED.update(numbers)


def _known_cards() -> frozenset[str]:
    return frozenset(ALL_TEST_CARDS).union(_GENERATED)


def cards_in_text(text: str) -> list[str]:
    """Which test card numbers appear in ``text``, plain or grouped with spaces, dashes or dots.

    Every run of 12 or more digits is looked up window by window, so the cost does not grow with
    the number of cards watched (a test may generate a thousand).
    """
    known = _known_cards()
    lengths = sorted({len(pan) for pan in known})
    found: set[str] = set()
    for run in _DIGIT_RUN.finditer(_SEPARATOR_BETWEEN_DIGITS.sub("", text)):
        digits = run.group()
        for length in lengths:
            for start in range(len(digits) - length + 1):
                if digits[start : start + length] in known:
                    found.add(digits[start : start + length])
    return [pan for pan in ALL_TEST_CARDS if pan in found] + sorted(found - set(ALL_TEST_CARDS))


#: 12 to 19 digits standing alone (not inside a longer word or hex string), single spaces or dashes allowed.
_STANDALONE_NUMBER = re.compile(r"(?<![0-9A-Za-z])\d(?:[ \-]?\d){11,18}(?![0-9A-Za-z])")


def without_request_ids(text: str) -> str:
    """``text`` with the service's request ids cut out: their random hex spells any short needle now and then."""
    return _REQUEST_ID.sub("req_", text)


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def card_shaped_numbers(text: str) -> list[str]:
    """Any card number at all, not only the suite's: standalone Luhn-valid runs of 12 to 19 digits.

    Masked forms (``**** 4242``), token ids, fingerprints (hex), timestamps and amounts never
    match; a ``pan_shaped`` token is all digits but fails the Luhn check by design.
    """
    found = []
    for match in _STANDALONE_NUMBER.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 12 <= len(digits) <= 19 and luhn_valid(digits):
            found.append(digits)
    return found


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
        elif kind == b"stream":  # the audit log
            values = [b for _, fields in client.xrange(key) for pair in fields.items() for b in pair]
        else:
            values = []
        values = [*values, *_inflated(values)]  # the audit archive's segments are zlib-compressed
        for value in values:
            for pan in cards_in_bytes(value):
                findings.append(f"value of {key[:60]!r} contains {pan[:6]}...")
    return findings


def _inflated(values: Iterable[bytes]) -> list[bytes]:
    """The decompressed contents of every value that is a zlib stream (compressed data hides text)."""
    found = []
    for value in values:
        if value[:2] in (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda"):
            try:
                found.append(zlib.decompressobj().decompress(value, 256 * 1024 * 1024))
            except zlib.error:
                continue
    return found


def file_findings(paths: Iterable[Path]) -> list[str]:
    findings = []
    for path in paths:
        if path.is_file():
            for pan in cards_in_bytes(path.read_bytes()):
                findings.append(f"{path} contains {pan[:6]}...")
    return findings


def cvc_fields_in_text(text: str) -> list[str]:
    """cvc-like keys with a digit value anywhere in ``text`` (a JSON body, a form, a page)."""
    return [m.group() for m in re.finditer(r'"?(cvc|cvv|cvv2|csc|security_code)"?\s*[:=]\s*"?\d{3,4}', text, re.I)]


class ResponseRecorder:
    """Scans every response body a test client reads for the suite's cards and for CVC fields.

    Attached to aiohttp test clients as a ``TraceConfig`` (see ``aiohttp_client`` in conftest).
    aiohttp reports a body chunk by chunk as the test reads it, after the request has "ended",
    so each chunk is scanned together with the end of the one before (a card split across two
    chunks is still found); only findings are kept, never the bodies.  A body the test never
    reads is never received, so never scanned.
    """

    OVERLAP = 64  # longer than any grouped card number or "cvc": "1234" field

    def __init__(self) -> None:
        self._findings: dict[str, None] = {}
        self.chunks = 0

    @property
    def findings(self) -> list[str]:
        return list(self._findings)

    def trace_config(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig(trace_config_ctx_factory=self._context)
        config.on_response_chunk_received.append(self._on_chunk)
        return config

    @staticmethod
    def _context(trace_request_ctx: Any = None) -> SimpleNamespace:
        return SimpleNamespace(tail=b"", trace_request_ctx=trace_request_ctx)

    async def _on_chunk(
        self, _: Any, context: SimpleNamespace, params: aiohttp.TraceResponseChunkReceivedParams
    ) -> None:
        window = context.tail + params.chunk
        context.tail = window[-self.OVERLAP :]
        self.scan(f"{params.method} {params.url.path}", window)

    def scan(self, where: str, body: bytes) -> None:
        self.chunks += 1
        for pan in cards_in_bytes(body):
            self._findings[f"response to {where}: card {pan[:6]}..."] = None
        for field in cvc_fields_in_text(body.decode("latin-1")):
            self._findings[f"response to {where}: {field[:40]}"] = None
