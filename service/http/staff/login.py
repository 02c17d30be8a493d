"""Signing in (password, then a TOTP code), signing out, and enrolling with a one-time link.

Sign-in happens in a *sign-in session* that holds only the CSRF token and,
after a right password, which account is half signed in.  The right TOTP
code deletes it and starts a staff session under a brand-new id (the id is
regenerated at sign-in).  Signing out deletes the session on the server, not
just the cookie.
"""

from __future__ import annotations

import re

import segno
from aiohttp import web
from markupsafe import Markup

from service.audit import Actor
from service.domain.audit import Action, Outcome
from service.domain.staff import Role, group_secret, totp_uri
from service.domain.staff_sessions import SignIn
from service.http.staff.pages import (
    CsrfRefused,
    StaffNotFound,
    client_address,
    redirect,
    render,
    staff_context,
)
from service.http.staff.sessions import (
    actor_of,
    check_csrf,
    clear_cookie,
    current_session,
    existing_sign_in,
    read_form,
    require,
    set_cookie,
    sign_in_session,
)

PASSWORD_STEP_SECONDS = 300
#: The link carries the token in its query string: the access log records paths without queries.
ENROLLMENT_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,64}$")
HOME_BY_ROLE = {
    Role.AGENT: "/staff/orders/new",
    Role.SUPERVISOR: "/staff/orders/new",
    Role.AUDITOR: "/staff/orders",
    Role.ADMIN: "/staff/team",
}
LOCKED = "This account is locked for 30 minutes after too many failed attempts, or it is disabled."


async def sign_in_page(
    request: web.Request, *, notice: str = "", error: str = "", username: str = "", status: int = 200
) -> web.Response:
    cookie: list[str] = []
    _, sign_in = await sign_in_session(request, cookie)
    response = render(
        request,
        "staff/login.html",
        {"title": "Sign in", "notice": notice, "error": error, "username": username, "csrf": sign_in.csrf},
        status=status,
    )
    if cookie:
        set_cookie(response, cookie[0])
    return response


def _totp_page(request: web.Request, sign_in: SignIn, *, error: str = "", status: int = 200) -> web.Response:
    return render(
        request, "staff/totp.html", {"title": "Enter your code", "csrf": sign_in.csrf, "error": error}, status=status
    )


async def home(request: web.Request) -> web.Response:
    session = await require(request)
    return redirect(HOME_BY_ROLE[session.role])


async def login_form(request: web.Request) -> web.Response:
    if await current_session(request) is not None:
        return redirect("/staff/")
    return await sign_in_page(request)


async def _posted_sign_in(request: web.Request) -> tuple[str, SignIn, dict[str, str]]:
    form = await read_form(request)
    found = await existing_sign_in(request)
    anonymous = Actor.anonymous(client_address(request))
    if found is None:
        await staff_context(request).auditor.record(
            anonymous, Action.CSRF, Outcome.REFUSED, request.path, "no sign-in session"
        )
        raise CsrfRefused("This sign-in form has expired. Open the sign-in page again.")
    await check_csrf(request, form, found[1].csrf, anonymous)
    return found[0], found[1], form


async def login_password(request: web.Request) -> web.Response:
    ctx = staff_context(request)
    sign_in_hash, sign_in, form = await _posted_sign_in(request)
    username = form.get("username", "")[:64]
    step = await ctx.accounts.check_password(username, form.get("password", ""), client_address(request))
    if step.status == "locked":
        return await sign_in_page(request, error=LOCKED, username=username, status=403)
    if step.status != "ok" or step.member is None:
        return await sign_in_page(request, error="The username or password is wrong.", username=username, status=401)
    member = step.member
    half = SignIn(sign_in.csrf, sign_in.created, member.agency_id, member.id, ctx.clock())
    await ctx.sessions.put_sign_in(sign_in_hash, half)
    return _totp_page(request, half)


async def login_totp(request: web.Request) -> web.Response:
    ctx = staff_context(request)
    sign_in_hash, sign_in, form = await _posted_sign_in(request)
    if not sign_in.staff_id or ctx.clock() - sign_in.password_ok_at > PASSWORD_STEP_SECONDS:
        return await sign_in_page(request, notice="Enter your username and password first.", status=401)
    step = await ctx.accounts.check_totp(
        sign_in.agency_id, sign_in.staff_id, form.get("code", ""), client_address(request)
    )
    if step.status == "ok" and step.member is not None:
        await ctx.sessions.delete_sign_in(sign_in_hash)
        cookie, _ = await ctx.accounts.start_session(step.member)
        response = redirect(HOME_BY_ROLE[step.member.role])
        set_cookie(response, cookie)
        return response
    if step.status == "locked":
        await ctx.sessions.delete_sign_in(sign_in_hash)
        return await sign_in_page(request, error=LOCKED, status=403)
    if step.status == "replayed":
        return _totp_page(request, sign_in, error="This code was already used. Wait for the next code.", status=401)
    return _totp_page(request, sign_in, error="That code is wrong. Enter the 6 digits your app shows now.", status=401)


async def logout(request: web.Request) -> web.Response:
    session = await require(request)
    form = await read_form(request)
    actor = actor_of(request, session)
    await check_csrf(request, form, session.csrf, actor)
    ctx = staff_context(request)
    await ctx.sessions.delete(session)
    await ctx.auditor.record(actor, Action.LOGOUT, Outcome.SUCCESS, "-")
    response = redirect("/staff/login?signed_out=1")
    clear_cookie(response)
    return response


# -- enrollment -----------------------------------------------------------------------------------


def qr_svg(uri: str) -> Markup:
    """The otpauth URI as an inline SVG QR code: drawn here, no request leaves the page."""
    svg = segno.make(uri, error="m").svg_inline(scale=4, dark="#000", light="#fff", title="TOTP QR code")
    return Markup(svg)  # noqa: S704 - segno's own SVG of a URI we built, no user input


async def _enrollment_page(
    request: web.Request, token: str, *, errors: dict[str, str] | None = None, status: int = 200
) -> web.Response:
    ctx = staff_context(request)
    enrollment = await ctx.accounts.begin_enrollment(token)
    if enrollment is None:
        raise StaffNotFound("This enrollment link is not valid, was already used, or has expired.")
    cookie: list[str] = []
    _, sign_in = await sign_in_session(request, cookie)
    uri = totp_uri(enrollment.totp_secret, enrollment.member.username, f"cardvault {enrollment.agency_slug}")
    response = render(
        request,
        "staff/enroll.html",
        {
            "title": "Set up your account",
            "csrf": sign_in.csrf,
            "member": enrollment.member,
            "agency": enrollment.agency_slug,
            "qr": qr_svg(uri),
            "secret": group_secret(enrollment.totp_secret),
            "errors": errors or {},
            "token": token,
        },
        status=status,
    )
    if cookie:
        set_cookie(response, cookie[0])
    return response


def _token(value: str) -> str:
    if not ENROLLMENT_TOKEN.match(value):
        raise StaffNotFound("This enrollment link is not valid, was already used, or has expired.")
    return value


async def enroll_form(request: web.Request) -> web.Response:
    return await _enrollment_page(request, _token(request.query.get("token", "")))


async def enroll_submit(request: web.Request) -> web.Response:
    _, _, form = await _posted_sign_in(request)
    token = _token(form.get("token", ""))
    ctx = staff_context(request)
    member, errors = await ctx.accounts.complete_enrollment(
        token, form.get("password", ""), form.get("confirm", ""), form.get("code", ""), client_address(request)
    )
    if member is None:
        if "form" in errors:
            raise StaffNotFound(errors["form"])
        return await _enrollment_page(request, token, errors=errors, status=422)
    return render(request, "staff/enrolled.html", {"title": "Account ready", "member": member})
