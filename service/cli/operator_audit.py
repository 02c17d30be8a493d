"""Recording what an operator changes at the command line in the audit log.

Every command that changes an agency, its keys or the key hierarchy runs its
change inside ``audited(...)``: success is recorded with what changed, a
refusal (unknown agency, a shredded one...) with why, as done by the
operator (the operating-system account and host: ``Actor.operator``).  Never
a key, a credential or a card: the details are written here, from names and
counts only.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from service.audit import Actor
from service.cli.runtime import Runtime
from service.domain.audit import Outcome
from service.domain.redaction import redact_card_numbers
from service.errors import CardvaultError, StoreUnavailable

log = structlog.get_logger("cardvault.audit")


@dataclass
class OperatorEvent:
    """What the command fills in as it learns it: the agency, the object, the detail."""

    agency_id: str = ""
    obj: str = "-"
    detail: str = ""

    async def for_slug(self, rt: Runtime, slug: str) -> None:
        """Attribute the event to SLUG's chain when such an agency exists."""
        self.agency_id = await rt.store.agency_id_for_slug(slug) or ""
        self.obj = self.agency_id or "-"


@contextlib.asynccontextmanager
async def audited(rt: Runtime, action: str, detail: str = "") -> AsyncIterator[OperatorEvent]:
    event = OperatorEvent(detail=detail)
    try:
        yield event
    except CardvaultError as exc:
        reason = redact_card_numbers(str(exc))[:200]
        try:
            await rt.auditor.record(
                Actor.operator(event.agency_id), action, Outcome.REFUSED, event.obj, reason, agency_id=event.agency_id
            )
        except StoreUnavailable:
            log.error("audit record lost", action=action, outcome="refused")
        raise
    await rt.auditor.record(
        Actor.operator(event.agency_id), action, Outcome.SUCCESS, event.obj, event.detail, agency_id=event.agency_id
    )
