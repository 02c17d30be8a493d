"""The admin's team page: list the agency's staff, add a member (showing the enrollment link once), disable, reset.

Admins manage only their own agency's accounts: every lookup goes through
the admin's agency, so another agency's staff id is simply not found.
"""

from __future__ import annotations

from aiohttp import web

from service.domain.staff import InvalidStaffInput, Permission, Role, StaffMember, parse_role
from service.domain.staff_sessions import StaffSession
from service.errors import OperatorError
from service.http.staff.pages import StaffNotFound, render, staff_context
from service.http.staff.sessions import actor_of, check_csrf, read_form, require


def enrollment_link(request: web.Request, token: str) -> str:
    base = staff_context(request).settings.public_url or str(request.url.origin())
    return f"{base}/staff/enroll?token={token}"


async def _slug(request: web.Request, session: StaffSession) -> str:
    row = await staff_context(request).accounts.agencies.store.agency(session.agency_id)
    if row is None:
        raise StaffNotFound("Your agency no longer exists.")
    return row.agency.slug


async def _page(
    request: web.Request,
    session: StaffSession,
    *,
    notice: str = "",
    link: str = "",
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    members = await staff_context(request).accounts.list(await _slug(request, session))
    return render(
        request,
        "staff/team.html",
        {
            "title": "Team",
            "session": session,
            "csrf": session.csrf,
            "members": members,
            "roles": [str(r) for r in Role],
            "notice": notice,
            "link": link,
            "errors": errors or {},
            "values": values or {"role": "agent"},
        },
        status=status,
    )


async def team_page(request: web.Request) -> web.Response:
    session = await require(request, Permission.MANAGE_STAFF)
    return await _page(request, session)


async def add_member(request: web.Request) -> web.Response:
    session = await require(request, Permission.MANAGE_STAFF)
    form = await read_form(request)
    actor = actor_of(request, session)
    await check_csrf(request, form, session.csrf, actor)
    values = {"username": form.get("username", "")[:32], "role": form.get("role", "")}
    try:
        member, token = await staff_context(request).accounts.add(
            await _slug(request, session), values["username"], parse_role(values["role"]), actor
        )
    except (InvalidStaffInput, OperatorError) as exc:
        return await _page(request, session, errors={"username": str(exc)}, values=values, status=422)
    return await _page(
        request,
        session,
        notice=f"{member.username} was added. Give them this one-time link (valid 24 hours):",
        link=enrollment_link(request, token),
    )


async def _member_of(request: web.Request, session: StaffSession) -> StaffMember:
    member = await staff_context(request).accounts.store.get(session.agency_id, request.match_info["staff_id"])
    if member is None:
        raise StaffNotFound("There is no such staff member in your agency.")
    return member


async def disable_member(request: web.Request) -> web.Response:
    session = await require(request, Permission.MANAGE_STAFF)
    form = await read_form(request)
    actor = actor_of(request, session)
    await check_csrf(request, form, session.csrf, actor)
    member = await _member_of(request, session)
    await staff_context(request).accounts.disable(await _slug(request, session), member.username, actor)
    return await _page(request, session, notice=f"{member.username} is disabled and signed out everywhere.")


async def reset_member(request: web.Request) -> web.Response:
    session = await require(request, Permission.MANAGE_STAFF)
    form = await read_form(request)
    actor = actor_of(request, session)
    await check_csrf(request, form, session.csrf, actor)
    member = await _member_of(request, session)
    _, token = await staff_context(request).accounts.reset(await _slug(request, session), member.username, actor)
    return await _page(
        request,
        session,
        notice=f"{member.username} must enroll again with this one-time link (valid 24 hours):",
        link=enrollment_link(request, token),
    )
