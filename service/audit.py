"""Writing and reading the audit trail: who (an Actor) did what, with which outcome, to which object.

Every staff use case and every refusal of the staff pages goes through
``Auditor.record``; the record's time comes from the service's clock, the
source address from the request.  Reading filters the newest records of one
agency only: an auditor never sees another agency's trail.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from service.adapters.audit_log import AuditLog
from service.clock import Clock
from service.domain.audit import AuditRecord, Outcome

log = structlog.get_logger("cardvault.audit")


@dataclass(frozen=True)
class Actor:
    """Who is acting: a staff member, the operator at the CLI, or someone not (yet) identified."""

    agency_id: str
    staff_id: str
    username: str
    role: str
    source: str

    @classmethod
    def operator(cls, agency_id: str) -> Actor:
        return cls(agency_id, "-", "operator", "operator", "cli")

    @classmethod
    def anonymous(cls, source: str, agency_id: str = "") -> Actor:
        return cls(agency_id, "-", "-", "-", source)


@dataclass(frozen=True)
class AuditFilter:
    action: str = ""
    outcome: str = ""
    actor: str = ""
    since: float | None = None
    until: float | None = None

    def keeps(self, record: AuditRecord) -> bool:
        return (
            (not self.action or record.action == self.action or record.action.startswith(self.action + "."))
            and (not self.outcome or record.outcome == self.outcome)
            and (not self.actor or record.actor == self.actor)
            and (self.since is None or record.at >= self.since)
            and (self.until is None or record.at < self.until)
        )


class Auditor:
    def __init__(self, audit_log: AuditLog, clock: Clock) -> None:
        self.log = audit_log
        self.clock = clock

    async def record(
        self, actor: Actor, action: str, outcome: Outcome, obj: str = "-", detail: str = "", *, agency_id: str = ""
    ) -> None:
        record = AuditRecord(
            at=round(self.clock(), 3),
            agency=agency_id or actor.agency_id,
            actor=actor.username,
            actor_id=actor.staff_id,
            role=actor.role,
            action=action,
            outcome=str(outcome),
            source=actor.source,
            object=obj,
            detail=detail,
        )
        await self.log.append(record)
        log.info("audit", action=action, outcome=str(outcome), actor=actor.username, object=obj)

    async def search(self, agency_id: str, wanted: AuditFilter, limit: int = 1000) -> list[AuditRecord]:
        found: list[AuditRecord] = []
        for record in await self.log.newest(agency_id):
            if wanted.keeps(record):
                found.append(record)
                if len(found) >= limit:
                    break
        return found


def actions_in(records: Iterable[AuditRecord]) -> list[str]:
    return sorted({r.action for r in records})
