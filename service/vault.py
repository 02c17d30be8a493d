"""Token use cases: tokenize, look up, list by fingerprint, delete.

This is where the pieces meet: the domain parses and shapes, the keyring
seals, the store writes.  A tokenize is one Redis round trip (one script);
``deduplicate`` with a CVC for a card that already has a token takes a second
one to seal the new CVC to the existing token id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial

from service.adapters.store import VaultStore
from service.agencies import Principal
from service.clock import Clock, millis
from service.domain.cards import CardNumber, Cvc, expiry_end, make_pan_shaped
from service.domain.tokens import StoredCard, TokenFormat, TokenView, is_token_id
from service.domain.velocity import Action
from service.errors import DecryptionFailed, FieldError, NotFound, StoreUnavailable, ValidationFailed
from service.metrics import record_token_created
from service.settings import TokenSettings
from service.velocity import Subject, Velocity, enforce

ID_ATTEMPTS = 8
LIST_LIMIT = 100
MIN_TOKEN_LIFETIME = 60


@dataclass(frozen=True, repr=False)
class TokenizeRequest:
    """A parsed, validated request to tokenize a card."""

    number: CardNumber
    exp_month: int
    exp_year: int
    cvc: Cvc | None = None
    name: str | None = None
    postal_code: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    format: TokenFormat = TokenFormat.OPAQUE
    expires_at: int | None = None
    deduplicate: bool = False

    def __repr__(self) -> str:
        return f"TokenizeRequest({self.number!r})"


@dataclass(frozen=True)
class Tokenized:
    token: TokenView
    created: bool


class Vault:
    def __init__(
        self, store: VaultStore, settings: TokenSettings, clock: Clock, velocity: Velocity | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.velocity = velocity  # card-testing defence: its gate rides in the token write's round trip

    def _expiry(self, request: TokenizeRequest, now: float) -> int:
        card_end = int(expiry_end(request.exp_month, request.exp_year).timestamp())
        if request.expires_at is not None:
            if request.expires_at < now + MIN_TOKEN_LIFETIME:
                raise ValidationFailed(
                    errors=[FieldError("expires_at", "expires_at_invalid", "must be at least a minute in the future")]
                )
            if request.expires_at > card_end:
                raise ValidationFailed(
                    errors=[FieldError("expires_at", "expires_at_invalid", "must not be later than the card's expiry")]
                )
            return request.expires_at
        if self.settings.default_ttl_days is not None:
            return min(card_end, int(now) + self.settings.default_ttl_days * 86400)
        return card_end

    async def tokenize(
        self, principal: Principal, request: TokenizeRequest, subject: Subject | None = None
    ) -> Tokenized:
        """Seal and store the card; with a ``subject``, within its velocity limits (else TooManyRequests)."""
        keys = principal.keys
        agency_id = principal.agency.id
        now = self.clock()
        expires_at = self._expiry(request, now)
        stored = StoredCard(
            number=request.number,
            exp_month=request.exp_month,
            exp_year=request.exp_year,
            fingerprint=keys.fingerprint(request.number.reveal()),
            created=int(now),
            expires_at=expires_at,
            name=request.name,
            postal_code=request.postal_code,
            metadata=dict(request.metadata),
        )
        cvc_expires_ms = millis(min(now + self.settings.cvc_ttl_seconds, expires_at))
        velocity = self.velocity
        gate = velocity.plan(Action.TOKENS, principal.agency, subject, stored.fingerprint) if velocity else None
        for _ in range(ID_ATTEMPTS):
            token_id = (
                self.store.new_opaque_token_id(stored.fingerprint)
                if request.format is TokenFormat.OPAQUE
                else self.store.new_token_id(stored.fingerprint, partial(make_pan_shaped, request.number))
            )
            async with enforce(velocity, gate, subject):
                result = await self.store.put_token(
                    agency_id,
                    token_id,
                    blob=keys.seal_card(token_id, stored.to_bytes()),
                    expires_at_ms=millis(expires_at),
                    fingerprint=stored.fingerprint,
                    cvc_blob=keys.seal_cvc(token_id, request.cvc.reveal().encode()) if request.cvc else None,
                    cvc_expires_at_ms=cvc_expires_ms,
                    deduplicate=request.deduplicate,
                    token_format=str(request.format),
                    now_ms=millis(now),
                    gate=gate,
                )
            gate = None  # counted once: a retry after an id collision is the same request
            if result.outcome == "created":
                record_token_created(str(request.format))
                return Tokenized(TokenView.of(token_id, stored, cvc_retained=request.cvc is not None), True)
            if result.outcome == "existing":
                assert result.existing_id is not None
                assert result.existing_blob is not None
                existing = keys.open_stored_card(result.existing_id, result.existing_blob)
                cvc_retained = result.existing_cvc
                if request.cvc is not None:
                    cvc_ms = min(cvc_expires_ms, millis(existing.expires_at))
                    blob = keys.seal_cvc(result.existing_id, request.cvc.reveal().encode())
                    await self.store.set_cvc(agency_id, result.existing_id, blob, cvc_ms)
                    cvc_retained = True
                return Tokenized(TokenView.of(result.existing_id, existing, cvc_retained=cvc_retained), False)
        raise StoreUnavailable("could not find an unused token id")  # pragma: no cover - 2^-100 odds

    async def get(self, principal: Principal, token_id: str) -> TokenView:
        if not is_token_id(token_id):
            raise NotFound("No such token", code="token_not_found")
        blob, has_cvc = await self.store.get_token(principal.agency.id, token_id)
        if blob is None:
            raise NotFound("No such token", code="token_not_found")
        stored = principal.keys.open_stored_card(token_id, blob)
        return TokenView.of(token_id, stored, cvc_retained=has_cvc)

    async def delete(self, principal: Principal, token_id: str) -> None:
        if not is_token_id(token_id):
            raise NotFound("No such token", code="token_not_found")
        blob = await self.store.delete_token(principal.agency.id, token_id)
        if blob is None:
            raise NotFound("No such token", code="token_not_found")
        try:
            stored = principal.keys.open_stored_card(token_id, blob)
        except DecryptionFailed:
            # Already deleted, which is what was asked; the fingerprint set drops the
            # dangling id the next time it is read (see the store's scripts).
            return
        await self.store.forget_fingerprint(principal.agency.id, stored.fingerprint, token_id)

    async def by_fingerprint(self, principal: Principal, fingerprint: str) -> tuple[list[TokenView], bool]:
        """The oldest ``LIST_LIMIT`` live tokens of the card, and whether there are more."""
        found = await self.store.tokens_by_fingerprint(principal.agency.id, fingerprint)
        views = [
            TokenView.of(token_id, principal.keys.open_stored_card(token_id, blob), cvc_retained=cvc)
            for token_id, blob, cvc in found
        ]
        views.sort(key=lambda v: (v.created, v.id))
        return views[:LIST_LIMIT], len(views) > LIST_LIMIT


def utc_now(clock: Clock) -> dt.datetime:
    return dt.datetime.fromtimestamp(clock(), tz=dt.UTC)
