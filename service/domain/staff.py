"""Staff accounts as values: roles and what each may do, usernames, password rules, lockout, TOTP matching.

The virtual terminal is the one place a person types a card number into our
pages, so who may do what is decided here, in plain data that the HTTP layer
only consults: an agent takes orders and sees their own, a supervisor also
voids and refunds and sees the whole team's, an auditor reads orders and the
audit log and changes nothing, an admin manages the agency's staff.  Every
account belongs to exactly one agency.

Pure Python: no aiohttp, no Redis.  TOTP is RFC 6238 through pyotp; the
matching here returns the time-step counter a code belongs to so the caller
can refuse a counter that was already used (a code works once).
"""

from __future__ import annotations

import enum
import functools
import hmac
import re
import secrets
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, Final

import pyotp

from service.domain.ids import card_free

MIN_PASSWORD_LENGTH: Final = 12
MAX_PASSWORD_LENGTH: Final = 128
MAX_FAILED_ATTEMPTS: Final = 10
LOCKOUT_SECONDS: Final = 30 * 60
ENROLLMENT_SECONDS: Final = 24 * 3600
TOTP_STEP_SECONDS: Final = 30
TOTP_DIGITS: Final = 6
#: Codes of the previous and the next 30-second step are accepted too (clock drift of the phone).
TOTP_DRIFT_STEPS: Final = 1
USERNAME_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{1,31}$")


class Role(enum.StrEnum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"
    AUDITOR = "auditor"
    ADMIN = "admin"


class Permission(enum.StrEnum):
    TAKE_ORDERS = "take_orders"
    VIEW_OWN_ORDERS = "view_own_orders"
    VIEW_TEAM_ORDERS = "view_team_orders"
    VOID_REFUND = "void_refund"
    EXPORT_ORDERS = "export_orders"
    VIEW_AUDIT = "view_audit"
    MANAGE_STAFF = "manage_staff"


ROLE_PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    Role.AGENT: frozenset({Permission.TAKE_ORDERS, Permission.VIEW_OWN_ORDERS}),
    Role.SUPERVISOR: frozenset(
        {
            Permission.TAKE_ORDERS,
            Permission.VIEW_OWN_ORDERS,
            Permission.VIEW_TEAM_ORDERS,
            Permission.VOID_REFUND,
            Permission.EXPORT_ORDERS,
        }
    ),
    Role.AUDITOR: frozenset(
        {Permission.VIEW_OWN_ORDERS, Permission.VIEW_TEAM_ORDERS, Permission.EXPORT_ORDERS, Permission.VIEW_AUDIT}
    ),
    Role.ADMIN: frozenset({Permission.MANAGE_STAFF}),
}


def allows(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]


class StaffStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for enrollment (password and TOTP not set yet)
    ACTIVE = "active"
    DISABLED = "disabled"


class InvalidStaffInput(ValueError):
    """A username, role or password that cannot be used; the message never repeats a password."""


def validate_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME_PATTERN.match(name):
        raise InvalidStaffInput(
            f"username {username!r}: use 2 to 32 lowercase letters, digits, dots, dashes or underscores"
        )
    return name


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidStaffInput(f"role {value!r}: one of {', '.join(r.value for r in Role)}") from None


@functools.cache
def common_passwords() -> frozenset[str]:
    """The bundled list of common passwords (lower-case), read once."""
    text = resources.files("service.domain").joinpath("common_passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def password_problems(password: str, username: str) -> list[str]:
    """Why ``password`` may not be used (empty when it may)."""
    problems: list[str] = []
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(f"Use at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        problems.append(f"Use at most {MAX_PASSWORD_LENGTH} characters.")
    if not (any(c.isalpha() for c in password) and any(c.isdigit() for c in password)):
        problems.append("Use both letters and digits.")
    lowered = password.lower()
    if lowered in common_passwords() or _strip_trailing_digits_and_symbols(lowered) in common_passwords():
        problems.append("This password is too common; choose another.")
    if username and username.lower() in lowered:
        problems.append("The password must not contain your username.")
    return problems


def _strip_trailing_digits_and_symbols(text: str) -> str:
    return text.rstrip("0123456789!@#$%^&*.?_-")


# --- TOTP -----------------------------------------------------------------------


def new_totp_secret() -> str:
    """160 random bits in base32, as authenticator apps expect."""
    return pyotp.random_base32(32)


def totp_uri(secret: str, username: str, issuer: str) -> str:
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP_SECONDS).provisioning_uri(
        name=username, issuer_name=issuer
    )


def totp_counter(now: float) -> int:
    return int(now // TOTP_STEP_SECONDS)


def match_totp(secret: str, code: str, now: float) -> int | None:
    """The time-step counter ``code`` belongs to (within the allowed drift), or None when it matches none."""
    code = code.strip().replace(" ", "")
    if len(code) != TOTP_DIGITS or not code.isascii() or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP_SECONDS)
    current = totp_counter(now)
    found: int | None = None
    for counter in range(current - TOTP_DRIFT_STEPS, current + TOTP_DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(counter), code):
            found = counter  # no early exit: the same work whatever matched
    return found


def group_secret(secret: str) -> str:
    """``ABCD EFGH ...``: the secret as a person types it into an app."""
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


# --- the account -------------------------------------------------------------------


def new_staff_id() -> str:
    return card_free(lambda: "stf_" + secrets.token_hex(8))


def new_enrollment_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, repr=False)
class StaffMember:
    """One staff account as stored; ``password_hash`` and ``totp_sealed`` never leave the service."""

    id: str
    agency_id: str
    username: str
    role: Role
    status: StaffStatus
    created: int
    password_hash: bytes | None = None
    totp_sealed: bytes | None = None
    pending_totp_sealed: bytes | None = None
    last_totp_counter: int = -1
    failed_attempts: int = 0
    locked_until: int = 0
    enrollment_expires: int = 0
    enrollment_hash: str = ""  # sha256 of the one enrollment link that works now ("" when none)

    def __repr__(self) -> str:
        return f"StaffMember({self.id} {self.username} {self.role} {self.status})"

    def locked(self, now: float) -> bool:
        return self.locked_until > now

    def can_sign_in(self, now: float) -> bool:
        return self.status is StaffStatus.ACTIVE and not self.locked(now) and self.password_hash is not None

    def to_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "id": self.id,
            "agency_id": self.agency_id,
            "username": self.username,
            "role": str(self.role),
            "status": str(self.status),
            "created": self.created,
            "last_totp_counter": self.last_totp_counter,
            "failed_attempts": self.failed_attempts,
            "locked_until": self.locked_until,
            "enrollment_expires": self.enrollment_expires,
            "enrollment_hash": self.enrollment_hash,
        }
        for name in ("password_hash", "totp_sealed", "pending_totp_sealed"):
            value = getattr(self, name)
            fields[name] = value if value is not None else b""
        return fields

    @classmethod
    def from_fields(cls, raw: dict[bytes, bytes]) -> StaffMember:
        text = {k.decode(): v for k, v in raw.items()}
        return cls(
            id=text["id"].decode(),
            agency_id=text["agency_id"].decode(),
            username=text["username"].decode(),
            role=Role(text["role"].decode()),
            status=StaffStatus(text["status"].decode()),
            created=int(text["created"]),
            password_hash=text.get("password_hash") or None,
            totp_sealed=text.get("totp_sealed") or None,
            pending_totp_sealed=text.get("pending_totp_sealed") or None,
            last_totp_counter=int(text.get("last_totp_counter", b"-1")),
            failed_attempts=int(text.get("failed_attempts", b"0")),
            locked_until=int(text.get("locked_until", b"0")),
            enrollment_expires=int(text.get("enrollment_expires", b"0")),
            enrollment_hash=text.get("enrollment_hash", b"").decode(),
        )

    def public(self) -> dict[str, Any]:
        """What the CLI and the admin page show."""
        return {
            "id": self.id,
            "username": self.username,
            "role": str(self.role),
            "status": str(self.status),
            "created": self.created,
            "locked_until": self.locked_until or None,
        }

    def with_changes(self, **changes: Any) -> StaffMember:
        return replace(self, **changes)
