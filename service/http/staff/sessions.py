"""The staff session cookie and who is asking: load, time out, touch, check the role, check CSRF.

The cookie is ``__Host-cv_staff``: Secure, HttpOnly, SameSite=Strict, Path=/,
no Domain, and no Max-Age (it dies with the browser; the server ends it
sooner).  The ``__Host-`` prefix makes the browser refuse it unless it came
over HTTPS without a Domain, which is why the cookie is Secure in every mode:
with ``server.plain_http`` the service sits behind a proxy that terminates
TLS, so the browser still sees HTTPS.

CSRF: every session (sign-in sessions too) holds a random token; every form
carries it in a hidden field and every POST is refused unless the field
equals the session's token, compared in constant time.  SameSite=Strict is a
second line, not the only one.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from aiohttp import web

from service.audit import Actor
from service.domain.audit import Action, Outcome
from service.domain.staff import Permission, allows
from service.domain.staff_sessions import (
    COOKIE_NAME,
    SignIn,
    StaffSession,
    new_csrf_token,
    new_secret,
    parse_cookie,
    secret_hash,
    sign_in_cookie,
)
from service.http.staff.pages import (
    SESSION_KEY,
    CsrfRefused,
    SignInRequired,
    StaffForbidden,
    client_address,
    staff_context,
)

SIGN_IN_KEY = web.RequestKey("staff_sign_in", SignIn)
SIGN_IN_HASH = web.RequestKey("staff_sign_in_hash", str)


def set_cookie(response: web.StreamResponse, value: str) -> None:
    response.set_cookie(COOKIE_NAME, value, path="/", secure=True, httponly=True, samesite="Strict")


def clear_cookie(response: web.StreamResponse) -> None:
    response.set_cookie(
        COOKIE_NAME,
        "",
        path="/",
        secure=True,
        httponly=True,
        samesite="Strict",
        max_age=0,
        expires="Thu, 01 Jan 1970 00:00:00 GMT",
    )


def actor_of(request: web.Request, session: StaffSession) -> Actor:
    return Actor(session.agency_id, session.staff_id, session.username, str(session.role), client_address(request))


async def current_session(request: web.Request) -> StaffSession | None:
    """The live staff session of this request, or None (no cookie, unknown, ended: each recorded)."""
    ctx = staff_context(request)
    raw = request.cookies.get(COOKIE_NAME)
    ref = parse_cookie(raw)
    if ref is None or ref.kind != "staff":
        if raw and ref is None:
            await ctx.auditor.record(
                Actor.anonymous(client_address(request)),
                Action.SESSION_INVALID,
                Outcome.REFUSED,
                "-",
                "malformed cookie",
            )
        return None
    session = await ctx.sessions.get(ref.agency_id, ref.secret_hash)
    if session is None:
        # Into the trail of the agency the cookie names, when it exists, so its auditors see a forged or
        # foreign cookie aimed at them; otherwise the system's (an unknown id must not start a trail).
        named = await ctx.accounts.agencies.store.agency(ref.agency_id)
        await ctx.auditor.record(
            Actor.anonymous(client_address(request), ref.agency_id if named is not None else ""),
            Action.SESSION_INVALID,
            Outcome.REFUSED,
            "-",
            "unknown or ended session",
        )
        return None
    now = ctx.clock()
    reason = session.end_reason(
        now, idle_seconds=ctx.settings.idle_timeout_seconds, absolute_seconds=ctx.settings.absolute_timeout_seconds
    )
    if reason is not None:
        await ctx.sessions.delete(session)
        await ctx.auditor.record(actor_of(request, session), Action.SESSION_EXPIRED, Outcome.REFUSED, "-", reason)
        idle_minutes = ctx.settings.idle_timeout_seconds // 60
        absolute_hours = ctx.settings.absolute_timeout_seconds / 3600
        raise SignInRequired(
            f"Your session ended after {idle_minutes} minutes without activity. Sign in again."
            if reason == "idle"
            else f"Your session reached its {absolute_hours:g}-hour limit. Sign in again."
        )
    session = session.seen(now)
    await ctx.sessions.put(session)
    return session


async def require(request: web.Request, permission: Permission | None = None) -> StaffSession:
    """The signed-in staff member, with ``permission`` if one is named; otherwise a refusal page."""
    session = await current_session(request)
    if session is None:
        raise SignInRequired("Sign in to continue.")
    request[SESSION_KEY] = session
    if permission is not None and not allows(session.role, permission):
        await staff_context(request).auditor.record(
            actor_of(request, session), Action.FORBIDDEN, Outcome.REFUSED, request.path, f"needs {permission}"
        )
        raise StaffForbidden(f"Your role ({session.role}) may not do this.")
    return session


def _same(sent: object, expected: str) -> bool:
    return isinstance(sent, str) and bool(sent) and hmac.compare_digest(sent.encode(), expected.encode())


async def check_csrf(request: web.Request, form: Mapping[str, object], expected: str, actor: Actor) -> None:
    if not _same(form.get("csrf"), expected):
        await staff_context(request).auditor.record(
            actor, Action.CSRF, Outcome.REFUSED, request.path, "missing or wrong CSRF token"
        )
        raise CsrfRefused("This form has expired or did not come from this site. Reload the page and try again.")


async def read_form(request: web.Request) -> dict[str, str]:
    """The posted form's text fields (the first value of each); files are ignored."""
    posted = await request.post()
    form: dict[str, str] = {}
    for name, value in posted.items():
        if isinstance(value, str) and name not in form:
            form[name] = value
    return form


# -- sign-in sessions ------------------------------------------------------------------------------


async def sign_in_session(request: web.Request, response_cookie: list[str]) -> tuple[str, SignIn]:
    """The sign-in session of this request, created when there is none; a new cookie value goes in the list."""
    ctx = staff_context(request)
    ref = parse_cookie(request.cookies.get(COOKIE_NAME))
    if ref is not None and ref.kind == "sign_in":
        found = await ctx.sessions.get_sign_in(ref.secret_hash)
        if found is not None and not found.expired(ctx.clock()):
            return ref.secret_hash, found
    secret = new_secret()
    fresh = SignIn(csrf=new_csrf_token(), created=ctx.clock())
    await ctx.sessions.put_sign_in(secret_hash(secret), fresh)
    response_cookie.append(sign_in_cookie(secret))
    return secret_hash(secret), fresh


async def existing_sign_in(request: web.Request) -> tuple[str, SignIn] | None:
    ctx = staff_context(request)
    ref = parse_cookie(request.cookies.get(COOKIE_NAME))
    if ref is None or ref.kind != "sign_in":
        return None
    found = await ctx.sessions.get_sign_in(ref.secret_hash)
    if found is None or found.expired(ctx.clock()):
        return None
    return ref.secret_hash, found
