"""Free-text redaction: a text back with its card numbers and SSNs masked, or its cards replaced by tokens.

``POST /v1/redact`` is where an agency sends the chat transcripts, e-mails and
web-form comments in which customers typed card numbers they should not have.
Finding the numbers is ``service.domain.text_scan``; this module adds the two
modes and what they promise:

* **mask**: every card becomes ``**** **** **** 4242`` (``text_scan.mask_card``)
  and every SSN ``***-**-****``.  Nothing is stored.
* **tokenize**: every card the vault accepts (a known brand at a length it
  issues) becomes a token made by ``Vault.tokenize``, the same use case as
  ``POST /v1/tokens``; a card-shaped number of no accepted brand, and every SSN,
  is masked.  The same card twice in one text gets one token.  The text carries
  no expiry, so a redaction token records *the month its own life ends* as the
  card's expiry (it never outlives it) and says so in its metadata
  (``REDACTION_METADATA``); it lives ``redaction.token_ttl_days``.
* **All or nothing**: more than ``redaction.max_tokens`` distinct cards are
  refused before anything is written (422 ``too_many_cards``); if writing a
  token fails midway, the tokens this request already wrote are deleted
  before the error is raised (when Redis itself is down that deletion fails
  too, and they expire after their TTL), so no answer ever lists a token that
  was not kept, nor claims success for a partial result.

Scanning a megabyte takes a noticeable fraction of a second of CPU, so it runs
in the default executor and the event loop keeps serving other requests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

import structlog

from service.agencies import Principal
from service.clock import Clock
from service.domain.card_finder import joins_following
from service.domain.cards import CardNumber, CardNumberInvalid, parse_card_number
from service.domain.text_scan import (
    Finding,
    FindingKind,
    card_digits,
    find_sensitive,
    mask,
    replace_findings,
)
from service.errors import FieldError, ValidationFailed
from service.settings import RedactionSettings, TokenSettings
from service.vault import TokenizeRequest, Vault

log = structlog.get_logger("cardvault.redact")

#: Metadata of every token tokenize mode makes: where it came from, and that its expiry is a stand-in.
REDACTION_METADATA: Final[Mapping[str, str]] = {"cardvault_source": "redaction", "cardvault_expiry": "unknown"}
DAY_SECONDS: Final = 86400
T = TypeVar("T")


class RedactionMode(enum.StrEnum):
    MASK = "mask"
    TOKENIZE = "tokenize"


@dataclass(frozen=True)
class RedactedFinding:
    """A finding, what replaced it, and in tokenize mode the token it became (None when it was masked)."""

    finding: Finding
    replacement: str
    token: str | None = None


@dataclass(frozen=True)
class Redaction:
    mode: RedactionMode
    text: str
    findings: tuple[RedactedFinding, ...]
    tokens_created: int = 0


class TooManyCards(ValidationFailed):
    """Tokenize mode met more distinct cards than ``redaction.max_tokens``; nothing was written."""

    CODE: Final = "too_many_cards"

    def __init__(self, found: int, limit: int) -> None:
        message = (
            f"The text holds {found} different card numbers; tokenize mode takes at most {limit} per request. "
            "Split the text, or use mask mode."
        )
        super().__init__(message, code=self.CODE, errors=[FieldError("text", self.CODE, message)])


class TextRedactor:
    def __init__(self, vault: Vault | None, settings: RedactionSettings, tokens: TokenSettings, clock: Clock) -> None:
        self.vault = vault
        self.settings = settings
        self.tokens = tokens
        self.clock = clock

    async def mask(self, text: str) -> Redaction:
        return await _off_the_loop(mask_all, text)

    async def tokenize(self, principal: Principal, text: str) -> Redaction:
        assert self.vault is not None  # the HTTP layer has checked the service is ready
        findings, numbers = await _off_the_loop(_cards_to_tokenize, text)
        distinct = {number.reveal(): number for number in numbers if number is not None}
        if len(distinct) > self.settings.max_tokens:
            raise TooManyCards(len(distinct), self.settings.max_tokens)
        token_of, created = await self._tokenize_all(principal, self.vault, distinct.values())
        tokens = [None if number is None else token_of[number.reveal()] for number in numbers]
        redaction = await _off_the_loop(_with_tokens, text, findings, tokens)
        return Redaction(RedactionMode.TOKENIZE, redaction.text, redaction.findings, tokens_created=len(created))

    async def _tokenize_all(
        self, principal: Principal, vault: Vault, numbers: Iterable[CardNumber]
    ) -> tuple[dict[str, str], list[str]]:
        """A token for each card (digits -> token id), and the ids this call created; all of them or none."""
        expires_at = self._token_expiry()
        exp = dt.datetime.fromtimestamp(expires_at, tz=dt.UTC)
        token_of: dict[str, str] = {}
        created: list[str] = []
        try:
            for number in numbers:
                request = TokenizeRequest(
                    number=number,
                    exp_month=exp.month,
                    exp_year=exp.year,
                    metadata=REDACTION_METADATA,
                    expires_at=expires_at,
                )
                result = await vault.tokenize(principal, request)
                created.append(result.token.id)
                token_of[number.reveal()] = result.token.id
        except BaseException:
            await self._discard(principal, vault, created)
            raise
        return token_of, created

    def _token_expiry(self) -> int:
        days = self.settings.token_ttl_days
        if self.tokens.default_ttl_days is not None:
            days = min(days, self.tokens.default_ttl_days)
        return int(self.clock()) + days * DAY_SECONDS

    @staticmethod
    async def _discard(principal: Principal, vault: Vault, token_ids: Sequence[str]) -> None:
        """Delete what a failed request wrote; what cannot be deleted now expires with its TTL."""
        left = 0
        for token_id in token_ids:
            try:
                await vault.delete(principal, token_id)
            except Exception:
                left += 1
        if left:
            log.warning("redaction tokens left after a failure; they expire with their TTL", count=left)


def mask_all(text: str) -> Redaction:
    """Mask mode: every finding masked."""
    findings = find_sensitive(text)
    replacements = [mask(text, finding) for finding in findings]
    return _assembled(RedactionMode.MASK, text, findings, replacements, [None] * len(findings))


def _cards_to_tokenize(text: str) -> tuple[list[Finding], list[CardNumber | None]]:
    """The findings, and for each one the card the vault would accept (None for SSNs and other numbers)."""
    findings = find_sensitive(text)
    numbers: list[CardNumber | None] = []
    for finding in findings:
        number = None
        if finding.kind is FindingKind.CARD and finding.brand is not None:
            try:
                number = parse_card_number(card_digits(text, finding))
            except CardNumberInvalid:
                number = None
        numbers.append(number)
    return findings, numbers


def _with_tokens(text: str, findings: Sequence[Finding], tokens: Sequence[str | None]) -> Redaction:
    replacements = [
        mask(text, finding) if token is None else _token_text(text, finding, token)
        for finding, token in zip(findings, tokens, strict=True)
    ]
    return _assembled(RedactionMode.TOKENIZE, text, findings, replacements, tokens)


def _token_text(text: str, finding: Finding, token: str) -> str:
    """The token id; in brackets in the rare case its last characters are digits that would join the digits
    after it into a new card-shaped number."""
    return f"[{token}]" if joins_following(text, finding.end, token) else token


def _assembled(
    mode: RedactionMode,
    text: str,
    findings: Sequence[Finding],
    replacements: Sequence[str],
    tokens: Sequence[str | None],
) -> Redaction:
    by_position = dict(zip((f.start for f in findings), replacements, strict=True))
    redacted = replace_findings(text, findings, lambda finding: by_position[finding.start])
    return Redaction(
        mode,
        redacted,
        tuple(
            RedactedFinding(finding, replacement, token)
            for finding, replacement, token in zip(findings, replacements, tokens, strict=True)
        ),
    )


async def _off_the_loop(function: Callable[..., T], *args: object) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)
