"""Driving the staff pages over HTTP in tests: a cookie-keeping page client, enrollment and sign-in helpers.

The session cookie is ``__Host-`` and Secure, which a client keeps only for
HTTPS; the in-process test server speaks plain HTTP, so this client keeps the
cookie itself and sends it explicitly, exactly as a browser would over TLS.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

import pyotp
from aiohttp.test_utils import TestClient

from service.audit import Actor
from service.domain.audit import AuditRecord
from service.domain.staff import Role
from service.domain.staff_sessions import COOKIE_NAME
from service.http.state import SERVICES
from tests.conftest import FakeClock

Client = TestClient[Any, Any]
PASSWORD = "Correct7Horse9Battery"


@dataclass
class Page:
    status: int
    text: str
    headers: Any
    set_cookie: list[str] = field(default_factory=list)

    def hidden(self, name: str) -> str:
        match = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', self.text)
        assert match, f"no field {name} in page"
        return html.unescape(match.group(1))

    @property
    def csrf(self) -> str:
        return self.hidden("csrf")

    @property
    def location(self) -> str:
        return str(self.headers.get("Location", ""))


class StaffBrowser:
    """One person's browser: keeps the staff cookie, never follows redirects by itself."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.cookie: str | None = None

    def _headers(self) -> dict[str, str]:
        return {"Cookie": f"{COOKIE_NAME}={self.cookie}"} if self.cookie else {}

    async def _page(self, response: Any) -> Page:
        text = await response.text()
        raw = response.headers.getall("Set-Cookie", [])
        for header in raw:
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(header)
            if COOKIE_NAME in parsed:
                value = parsed[COOKIE_NAME].value
                self.cookie = value or None
        self.client.session.cookie_jar.clear()
        return Page(response.status, text, response.headers, raw)

    async def get(self, path: str) -> Page:
        response = await self.client.get(path, headers=self._headers(), allow_redirects=False)
        return await self._page(response)

    async def post(self, path: str, data: dict[str, str]) -> Page:
        response = await self.client.post(path, data=data, headers=self._headers(), allow_redirects=False)
        return await self._page(response)


async def add_staff(client: Client, slug: str, username: str, role: Role) -> str:
    """A pending account; returns its enrollment token."""
    staff = client.app[SERVICES].staff
    assert staff is not None
    _, token = await staff.accounts.add(slug, username, role, Actor.operator(""))
    return token


def totp_secret_of(page: Page) -> str:
    match = re.search(r'id="totp-secret" class="secret">([A-Z2-7 ]+)<', page.text)
    assert match, "no TOTP secret on the enrollment page"
    return match.group(1).replace(" ", "")


DAY = 86_400
MORNING_UTC = 10 * 3600  # twelve hours before the sandbox's default 22:00 UTC settlement cut-off


def move_to_morning(clock: FakeClock) -> FakeClock:
    """Move the clock forward to the next 10:00 UTC: a sale made then stays voidable for twelve hours, and
    ``clock.advance(DAY)`` takes it past the sandbox's settlement cut-off, whatever the real time is."""
    now = clock()
    clock.advance((MORNING_UTC - now % DAY) % DAY)
    return clock


def code_at(secret: str, clock: FakeClock) -> str:
    return pyotp.TOTP(secret).at(clock())


@dataclass
class StaffUser:
    username: str
    secret: str
    browser: StaffBrowser


async def enroll(client: Client, clock: FakeClock, token: str, username: str) -> StaffUser:
    browser = StaffBrowser(client)
    page = await browser.get(f"/staff/enroll?token={token}")
    assert page.status == 200, page.text
    secret = totp_secret_of(page)
    done = await browser.post(
        "/staff/enroll",
        {"csrf": page.csrf, "token": token, "password": PASSWORD, "confirm": PASSWORD, "code": code_at(secret, clock)},
    )
    assert done.status == 200, done.text
    return StaffUser(username, secret, browser)


async def sign_in(user: StaffUser, clock: FakeClock, *, password: str = PASSWORD) -> Page:
    """Password then a fresh TOTP code (the clock moves to the next 30-second step first)."""
    clock.advance(30)
    browser = user.browser
    browser.cookie = None
    form = await browser.get("/staff/login")
    step = await browser.post("/staff/login", {"csrf": form.csrf, "username": user.username, "password": password})
    assert step.status == 200, step.text
    return await browser.post("/staff/login/totp", {"csrf": step.csrf, "code": code_at(user.secret, clock)})


async def staff_member(client: Client, clock: FakeClock, slug: str, username: str, role: Role) -> StaffUser:
    """Added, enrolled and signed in."""
    user = await enroll(client, clock, await add_staff(client, slug, username, role), username)
    signed_in = await sign_in(user, clock)
    assert signed_in.status == 303, signed_in.text
    return user


async def audit_records(client: Client, agency_id: str) -> list[AuditRecord]:
    staff = client.app[SERVICES].staff
    assert staff is not None
    return await staff.auditor.log.newest(agency_id)
