"""The sandbox processor: every new agency's default, so agencies can test every outcome.

It runs in process and follows the public test-card table of a major
processor (the card number decides the outcome), so an agency can drive
approvals, each kind of decline, a processing error and a timeout end to end
without a processor account.  It is stateless: what may be captured, voided
or refunded is decided by the vault's own charge rules before it is called.

| card number        | outcome |
|--------------------|---------|
| 4242424242424242, 5555555555554444, 378282246310005, any other | approved |
| 4000000000000002   | declined: generic_decline |
| 4000000000009995   | declined: insufficient_funds |
| 4000000000009987   | declined: lost_card |
| 4000000000009979   | declined: stolen_card |
| 4000000000000069   | declined: expired_card |
| 4000000000000127   | declined: incorrect_cvc (CVC check fails) |
| 4000000000000119   | processing_error: the processor answered with an error |
| 4012888888881881   | answers only after ``slow_seconds`` (default 30 s, past the 25 s timeout) |

AVS: postal code ``00000`` gives ``N`` (no match), any other ``Y``, none ``P``
(not applicable).  CVC: sent gives ``pass``, absent ``unchecked``.

Settlement, like a real processor's daily batch: a capture (a sale, or a
later capture) settles at the first ``settlement_cutoff`` (UTC, on the app's
clock) after it.  Until then it can be voided; after, a void is refused with
``transaction_settled`` and it must be refunded.  The settlement time is
written into the capture's transaction id (``sbx_<random>_<settles at>``), so
the simulator stays stateless and every process of the vault agrees.  Refunds
are approved before settlement too (a real gateway refuses them), so an
integration can test a refund at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import secrets

from service.adapters.processors.base import TRANSACTION_SETTLED, AuthorizationRequest, Outcome, ProcessorResult
from service.clock import Clock, system_clock
from service.domain.ids import card_free

DECLINES = {
    "4000000000000002": "generic_decline",
    "4000000000009995": "insufficient_funds",
    "4000000000009987": "lost_card",
    "4000000000009979": "stolen_card",
    "4000000000000069": "expired_card",
    "4000000000000127": "incorrect_cvc",
}
PROCESSING_ERROR = "4000000000000119"
SLOW = "4012888888881881"
AVS_NO_MATCH_POSTAL_CODE = "00000"


def _digest(card_digits: str) -> str:
    """Compare through a hash so the table lookup never keeps the number around."""
    return hashlib.sha256(card_digits.encode()).hexdigest()


_DECLINE_BY_DIGEST = {_digest(n): code for n, code in DECLINES.items()}
_PROCESSING_ERROR_DIGEST = _digest(PROCESSING_ERROR)
_SLOW_DIGEST = _digest(SLOW)


DEFAULT_CUTOFF = dt.time(22, 0)  # 3 PM Pacific in summer, Authorize.Net's default transaction cut-off
_CAPTURED_ID = re.compile(r"^(sbx_[0-9a-f]{20})_([0-9]{1,12})\Z")


def _transaction_id() -> str:
    return card_free(lambda: "sbx_" + secrets.token_hex(10))


def next_settlement(captured_at: float, cutoff: dt.time) -> int:
    """The first daily cut-off (UTC) strictly after ``captured_at``."""
    moment = dt.datetime.fromtimestamp(captured_at, tz=dt.UTC)
    at = dt.datetime.combine(moment.date(), cutoff, tzinfo=dt.UTC)
    if at <= moment:
        at += dt.timedelta(days=1)
    return int(at.timestamp())


def settles_at_of(transaction_id: str) -> int | None:
    """When a captured sandbox transaction settles; None for an authorization that was never captured."""
    match = _CAPTURED_ID.match(transaction_id)
    return int(match.group(2)) if match else None


class SandboxProcessor:
    """In-process simulator; ``slow_seconds`` is how long the slow card takes to answer."""

    name = "sandbox"

    def __init__(
        self, *, slow_seconds: float = 30.0, settlement_cutoff: dt.time = DEFAULT_CUTOFF, clock: Clock = system_clock
    ) -> None:
        self.slow_seconds = slow_seconds
        self.settlement_cutoff = settlement_cutoff
        self.clock = clock

    def _captured(self, transaction_id: str) -> tuple[str, int]:
        """The id of a capture made now (the authorization's id plus its settlement time), and that time."""
        settles_at = next_settlement(self.clock(), self.settlement_cutoff)
        base = transaction_id.rsplit("_", 1)[0] if settles_at_of(transaction_id) is not None else transaction_id
        return f"{base}_{settles_at}", settles_at

    def __repr__(self) -> str:
        return "SandboxProcessor()"

    async def authorize(self, request: AuthorizationRequest) -> ProcessorResult:
        card = request.card
        digest = _digest(card.number.reveal())
        if digest == _SLOW_DIGEST:
            await asyncio.sleep(self.slow_seconds)
        avs = "P" if not card.postal_code else ("N" if card.postal_code == AVS_NO_MATCH_POSTAL_CODE else "Y")
        cvc_check = "pass" if card.cvc is not None else "unchecked"
        if digest == _PROCESSING_ERROR_DIGEST:
            return ProcessorResult(
                Outcome.ERROR,
                _transaction_id(),
                decline_code="processing_error",
                message="An error occurred while processing the card.",
                avs_result=avs,
                cvc_check=cvc_check,
            )
        decline = _DECLINE_BY_DIGEST.get(digest)
        if decline is not None:
            if decline == "incorrect_cvc":
                cvc_check = "fail"
            return ProcessorResult(
                Outcome.DECLINED,
                _transaction_id(),
                decline_code=decline,
                message="The card was declined.",
                avs_result=avs,
                cvc_check=cvc_check,
            )
        transaction_id, settles_at = _transaction_id(), None
        if request.capture:
            transaction_id, settles_at = self._captured(transaction_id)
        return ProcessorResult(
            Outcome.APPROVED,
            transaction_id,
            auth_code=secrets.token_hex(3).upper(),
            avs_result=avs,
            cvc_check=cvc_check,
            message="Approved.",
            settles_at=settles_at,
        )

    async def capture(self, transaction_id: str, amount: int, currency: str) -> ProcessorResult:
        captured_id, settles_at = self._captured(transaction_id)
        return ProcessorResult(Outcome.APPROVED, captured_id, message="Captured.", settles_at=settles_at)

    async def void(self, transaction_id: str) -> ProcessorResult:
        settles_at = settles_at_of(transaction_id)
        if settles_at is not None and self.clock() >= settles_at:
            return ProcessorResult(
                Outcome.ERROR,
                transaction_id,
                decline_code=TRANSACTION_SETTLED,
                message="The transaction has settled and can no longer be voided; refund it instead.",
                settles_at=settles_at,
            )
        return ProcessorResult(Outcome.APPROVED, transaction_id, message="Voided.")

    async def refund(self, transaction_id: str, amount: int, currency: str, card_last4: str) -> ProcessorResult:
        return ProcessorResult(Outcome.APPROVED, _transaction_id(), message="Refunded.")
