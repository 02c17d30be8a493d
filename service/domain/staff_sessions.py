"""Staff browser sessions as values: the cookie's shape, what a session holds, and when it has ended.

Two kinds share the one cookie: a *sign-in* session (before the second
factor: it holds only the CSRF token and, once the password was right, which
account is half signed in) and a *staff* session (after it).  Signing in
never upgrades a sign-in session: it deletes it and mints a new id, so an id
planted before sign-in is worth nothing after it (session fixation).

The cookie value names the agency (``s.<agency id>.<secret>``) so that a
session is looked up only under that agency's keys; the secret is 256 random
bits and only its SHA-256 is stored.  A staff session ends after
``idle_seconds`` without a request and ``absolute_seconds`` after sign-in,
whichever comes first, measured on the service's injectable clock.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import asdict, dataclass, replace
from typing import Final

from service.domain.staff import Role

COOKIE_NAME: Final = "__Host-cv_staff"
SIGN_IN_SECONDS: Final = 15 * 60
_STAFF_COOKIE: Final = re.compile(r"^s\.(agy_[0-9a-f]{16})\.([A-Za-z0-9_-]{43})$")
_SIGN_IN_COOKIE: Final = re.compile(r"^p\.([A-Za-z0-9_-]{43})$")


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class CookieRef:
    """A parsed cookie value: which kind of session, under which agency, and the secret's hash."""

    kind: str  # "staff" | "sign_in"
    agency_id: str
    secret_hash: str


def parse_cookie(value: str | None) -> CookieRef | None:
    if not value:
        return None
    staff = _STAFF_COOKIE.match(value)
    if staff:
        return CookieRef("staff", staff.group(1), secret_hash(staff.group(2)))
    sign_in = _SIGN_IN_COOKIE.match(value)
    if sign_in:
        return CookieRef("sign_in", "", secret_hash(sign_in.group(1)))
    return None


def staff_cookie(agency_id: str, secret: str) -> str:
    return f"s.{agency_id}.{secret}"


def sign_in_cookie(secret: str) -> str:
    return f"p.{secret}"


@dataclass(frozen=True)
class SignIn:
    """A sign-in in progress: the CSRF token of its forms, and the account whose password was right."""

    csrf: str
    created: float
    agency_id: str = ""
    staff_id: str = ""
    password_ok_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> SignIn:
        return cls(**json.loads(raw))

    def expired(self, now: float) -> bool:
        return now - self.created > SIGN_IN_SECONDS


@dataclass(frozen=True)
class StaffSession:
    agency_id: str
    staff_id: str
    username: str
    role: Role
    csrf: str
    created: float
    last_seen: float
    secret_hash: str = ""

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("secret_hash")
        data["role"] = str(self.role)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str, secret_hash: str) -> StaffSession:
        data = json.loads(raw)
        return cls(**{**data, "role": Role(data["role"]), "secret_hash": secret_hash})

    def end_reason(self, now: float, *, idle_seconds: float, absolute_seconds: float) -> str | None:
        """``idle`` or ``absolute`` when the session is over at ``now``, else None."""
        if now - self.created > absolute_seconds:
            return "absolute"
        if now - self.last_seen > idle_seconds:
            return "idle"
        return None

    def seen(self, now: float) -> StaffSession:
        return replace(self, last_seen=now)
