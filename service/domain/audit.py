"""Audit records (PCI DSS 10.2): who did what, when, with what outcome, from where, to which object.

A record is a flat map of short strings so it can be one Redis stream entry
and one CSV row as it is; ``v`` names the record's shape.  Stored records
also carry their place in the hash chain (``seq``, ``prev``, ``hash``: see
``service.domain.audit_chain``), added when the record is appended.  Nothing
here ever holds card data: values are written by our code, and the ones
that can carry what someone typed still go through the card redactor on the
way in: ``actor`` and ``detail`` always, and ``object`` when the request was
refused (it may be an id taken from a URL that names nothing; an object that
was acted on is an id the vault minted, which redaction could only mangle).
Times and addresses are never redacted: "1777967698.012" and "192.168.100.200"
are digit groups the card redactor would take for card numbers.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Final

from service.domain.redaction import redact_card_numbers

RECORD_VERSION: Final = "1"
FIELDS: Final = ("at", "agency", "actor", "actor_id", "role", "action", "outcome", "source", "object", "detail")
MAX_VALUE_CHARS: Final = 500
FREE_TEXT: Final = ("actor", "detail")  # always through the card redactor
SYSTEM_CHAIN: Final = "system"  # the chain of events that belong to no agency


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
    # The REST API (secret and publishable keys)
    API_AUTH = "api.auth"  # a missing or unknown API key
    API_FORBIDDEN = "api.authorization"  # a key used for what it may not do, or from an unregistered origin
    TOKEN_DELETE = "token.delete"  # noqa: S105 - an action name
    CHARGE = "charge.create"
    CAPTURE = "charge.capture"
    CHARGE_VOID = "charge.void"
    CHARGE_REFUND = "charge.refund"
    FORWARD = "forward.request"
    CHECKOUT_COMPLETE = "checkout.complete"
    # The operator's command line
    AGENCY_CREATE = "agency.create"
    AGENCY_STATUS = "agency.status"
    AGENCY_ORIGINS = "agency.origins"
    AGENCY_API_KEYS = "agency.api_keys"
    AGENCY_SHRED = "agency.shred"
    AGENCY_PROCESSOR = "agency.processor"
    AGENCY_LIMITS = "agency.limits"
    AGENCY_DESTINATIONS = "agency.destinations"
    KEYS_ROTATE = "keys.rotate"
    KEYS_REWRAP = "keys.rewrap"
    # The audit log looking after itself
    AUDIT_CHAIN_START = "audit.chain_start"
    AUDIT_ARCHIVE = "audit.archive"
    AUDIT_RETENTION = "audit.retention"
    AUDIT_EXPORT = "audit.export"


def chain_of(agency_id: str) -> str:
    """The chain a record belongs to: its agency's, or the system chain."""
    return agency_id or SYSTEM_CHAIN


@dataclass(frozen=True)
class AuditRecord:
    at: float
    agency: str
    actor: str  # username, "operator" for the CLI, "api" for an API key, "-" when nobody was identified
    actor_id: str
    role: str
    action: str
    outcome: str
    source: str  # client address as the server saw it, or "cli@<host>"
    object: str  # what it was done to: a charge id, a staff id, "-"
    detail: str
    id: str = ""  # the stream entry id, once stored
    seq: int = 0  # its place in its chain, once stored
    hash: str = ""  # its chain hash, once stored

    def to_fields(self) -> dict[str, str]:
        """The record's own fields (not its chain fields), every value redacted and bounded."""
        fields = {name: str(getattr(self, name))[:MAX_VALUE_CHARS] for name in FIELDS}
        for name in FREE_TEXT + (("object",) if self.outcome == Outcome.REFUSED else ()):
            fields[name] = redact_card_numbers(fields[name])[:MAX_VALUE_CHARS]
        fields["v"] = RECORD_VERSION
        return fields

    @classmethod
    def from_fields(cls, entry_id: str, fields: dict[str, str]) -> AuditRecord:
        try:
            at = float(fields.get("at", "0"))
        except ValueError:
            at = 0.0
        seq = fields.get("seq", "")
        return cls(
            at=at,
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
            seq=int(seq) if seq.isdigit() else 0,
            hash=fields.get("hash", ""),
        )

    @property
    def when(self) -> str:
        return utc_text(self.at)


def utc_text(at: float) -> str:
    return dt.datetime.fromtimestamp(at, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
