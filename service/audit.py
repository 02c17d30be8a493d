"""Writing and reading the audit log: who (an Actor) did what, with which outcome, to which object.

Every surface records through ``Auditor.record``: the staff pages and their
use cases, the REST API's handlers (``service.http.api_audit``) and the
operator's commands.  The record's time comes from the service's clock, the
source address from the request.  Each record is linked into its chain (the
agency's, or the system's) by ``service.audit_appender`` before this returns.

Refusals that anyone can provoke at will (bad API keys) go through
``record_refusal``, which samples them (``service.domain.audit_sampling``).

Reading filters the newest queryable records of one agency only: an auditor
never sees another agency's trail.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from service.adapters.audit_log import AuditLog
from service.audit_appender import ChainAppender
from service.clock import Clock
from service.domain.audit import SYSTEM_CHAIN, Action, AuditRecord, Outcome, chain_of
from service.domain.audit_sampling import FloodKey, FloodSampler

log = structlog.get_logger("cardvault.audit")


def operator_account() -> str:
    """The operating-system account running a CLI command (PCI DSS 10.2.2: the individual)."""
    try:
        return f"os:{getpass.getuser()}"
    except (OSError, KeyError):
        return f"os:uid-{os.getuid()}"


@dataclass(frozen=True)
class Actor:
    """Who is acting: a staff member, the operator at the CLI, an API key, or someone not (yet) identified."""

    agency_id: str
    staff_id: str
    username: str
    role: str
    source: str

    @classmethod
    def operator(cls, agency_id: str) -> Actor:
        return cls(agency_id, operator_account(), "operator", "operator", f"cli@{socket.gethostname()}")

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
        self.flood = FloodSampler()
        self.appender = ChainAppender(audit_log, self._chain_started)

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
        stored = await self.appender.append(chain_of(record.agency), record.to_fields())
        # The log line is a witness kept outside Redis: with it a rolled-back head shows.
        log.info(
            "audit",
            action=str(action),  # a plain str (not the enum) lets the log redactor's one-search shortcut see it
            outcome=str(outcome),
            actor=actor.username,
            object=obj,
            chain=stored.chain,
            seq=stored.seq,
            chain_hash=stored.hash,
        )

    async def record_refusal(self, actor: Actor, action: str, code: str, *, agency_id: str = "") -> None:
        """A refusal anyone can provoke at will: the 1st, 10th, 100th... per address and minute are recorded."""
        key = FloodKey(agency_id or actor.agency_id, actor.source, action, code)
        for sample in self.flood.note(key, self.clock()):
            who = actor if sample.key == key else Actor(sample.key.chain_agency, "-", "-", "-", sample.key.source)
            await self.record(
                who, sample.key.action, Outcome.REFUSED, "-", sample.describe(), agency_id=sample.key.chain_agency
            )

    async def _chain_started(self, chain: str) -> None:
        """Note each new agency chain in the system chain: a chain deleted and begun again then shows."""
        if chain == SYSTEM_CHAIN:
            return  # (and the system chain's own flusher is the one that would have to write it)
        await self.record(Actor("", "-", "-", "system", "-"), Action.AUDIT_CHAIN_START, Outcome.SUCCESS, chain)

    # -- reading -----------------------------------------------------------------------
    async def search(self, agency_id: str, wanted: AuditFilter, limit: int = 1000) -> list[AuditRecord]:
        found: list[AuditRecord] = []
        for record in await self.log.newest(agency_id):
            if wanted.keeps(record):
                found.append(record)
                if len(found) >= limit:
                    break
        return found

    async def chain_status(self, agency_id: str) -> dict[str, str] | None:
        """The last `audit verify` result for the agency's chain (None: never verified, or not genuine)."""
        return await self.log.status(chain_of(agency_id))


def actions_in(records: Iterable[AuditRecord]) -> list[str]:
    return sorted({r.action for r in records})
