"""Audit records (PCI DSS 10.2): who did what, when, with what outcome, from where, to which object.

A record is a flat map of short strings so it can be one Redis stream entry
and one CSV row as it is; ``v`` names the shape, so a later version (issue 6
adds a hash chain: ``prev`` and ``hash`` members) can add fields without
touching old entries.  Nothing here ever holds card data: ``detail`` is
written by our code, never copied from what a user typed, and it still goes
through the card redactor on the way in.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import asdict, dataclass
from typing import Final

from service.domain.redaction import redact_card_numbers

RECORD_VERSION: Final = "1"
FIELDS: Final = ("at", "agency", "actor", "actor_id", "role", "action", "outcome", "source", "object", "detail")


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"  # the attempt was made and did not succeed (wrong password, declined card)
    REFUSED = "refused"  # the request was not allowed (CSRF, role, lockout, expired session)


class Action(enum.StrEnum):
    LOGIN = "login"
    LOGIN_PASSWORD = "login.password"  # noqa: S105 - an action name
    LOGIN_TOTP = "login.totp"
    LOCKOUT = "login.lockout"
    LOGOUT = "logout"
    SESSION_EXPIRED = "session.expired"
    SESSION_INVALID = "session.invalid"
    CSRF = "csrf"
    FORBIDDEN = "authorization"
    ORDER = "order.create"
    ORDER_VIEW = "order.view"
    ORDER_INPUT = "order.input"
    ORDER_FORM = "order.form"
    VOID = "order.void"
    REFUND = "order.refund"
    EXPORT_ORDERS = "export.orders"
    EXPORT_AUDIT = "export.audit"
    VIEW_AUDIT = "audit.view"
    STAFF_ADD = "staff.add"
    STAFF_ENROLL = "staff.enroll"
    STAFF_DISABLE = "staff.disable"
    STAFF_RESET = "staff.reset"


@dataclass(frozen=True)
class AuditRecord:
    at: float
    agency: str
    actor: str  # username, "operator" for the CLI, "-" when nobody was identified
    actor_id: str
    role: str
    action: str
    outcome: str
    source: str  # client address as the server saw it, or "cli"
    object: str  # what it was done to: a charge id, a staff id, "-"
    detail: str
    id: str = ""  # the stream entry id, once stored

    def to_fields(self) -> dict[str, str]:
        fields = {name: str(value) for name, value in asdict(self).items() if name != "id"}
        fields["detail"] = redact_card_numbers(fields["detail"])[:500]
        fields["v"] = RECORD_VERSION
        return fields

    @classmethod
    def from_fields(cls, entry_id: str, fields: dict[str, str]) -> AuditRecord:
        return cls(
            at=float(fields.get("at", "0")),
            agency=fields.get("agency", ""),
            actor=fields.get("actor", "-"),
            actor_id=fields.get("actor_id", "-"),
            role=fields.get("role", "-"),
            action=fields.get("action", ""),
            outcome=fields.get("outcome", ""),
            source=fields.get("source", "-"),
            object=fields.get("object", "-"),
            detail=fields.get("detail", ""),
            id=entry_id,
        )

    @property
    def when(self) -> str:
        return dt.datetime.fromtimestamp(self.at, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
