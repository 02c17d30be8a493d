"""Rendering staff pages: templates, the per-response CSP nonce, no-store, and refusals as HTML pages.

Every staff answer carries its own Content-Security-Policy: scripts run only
with this response's nonce, styles and images only from this origin, forms
post only here, and no page can be framed.  The API's ``security_headers``
middleware adds the rest (HSTS, nosniff, no-referrer) with ``setdefault``, so
what is set here wins.  Every staff answer is ``Cache-Control: no-store``: a
receipt must not stay in a shared computer's cache.

A refusal (sign-in needed, CSRF, a role, a missing order) is an exception the
``html_errors`` middleware turns into a page with the right status, so a
person gets a page that says what happened instead of problem+json.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp_jinja2
import structlog
from aiohttp import web

from service.domain.order_form import format_amount
from service.errors import ApiError, StoreUnavailable
from service.http.state import SERVICES
from service.staff_context import StaffContext

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NONCE = web.RequestKey("staff_csp_nonce", str)
STATIC = "/staff/static"

log = structlog.get_logger("cardvault.staff")


def csp(nonce: str | None) -> str:
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    return (
        f"default-src 'none'; script-src {script}; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'none'"
    )


STAFF_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class StaffRefusal(Exception):
    """A request refused with a page: status, heading and a sentence for the person."""

    status = 400
    heading = "This request cannot be done"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SignInRequired(StaffRefusal):
    status = 401
    heading = "Please sign in"


class CsrfRefused(StaffRefusal):
    status = 403
    heading = "This form was refused"


class StaffForbidden(StaffRefusal):
    status = 403
    heading = "Not allowed"


class StaffNotFound(StaffRefusal):
    status = 404
    heading = "Not found"


def staff_context(request: web.Request) -> StaffContext:
    staff = request.config_dict[SERVICES].staff
    if staff is None:
        raise StoreUnavailable("the service is not ready yet")
    return staff


def client_address(request: web.Request) -> str:
    return request.remote or "-"


def nonce_of(request: web.Request) -> str:
    if NONCE not in request:
        request[NONCE] = secrets.token_urlsafe(18)
    return request[NONCE]


def when(timestamp: float | None) -> str:
    if not timestamp:
        return ""
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def money(cents: int | None) -> str:
    return "" if cents is None else "$" + format_amount(cents)


FILTERS: Mapping[str, Callable[..., str]] = {"when": when, "money": money}


def render(request: web.Request, template: str, context: Mapping[str, Any], *, status: int = 200) -> web.Response:
    nonce = nonce_of(request)
    full = {"nonce": nonce, "static": STATIC, **context}
    response = aiohttp_jinja2.render_template(template, request, full, status=status)
    response.headers["Content-Security-Policy"] = csp(nonce)
    return response


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def apply_staff_headers(response: web.StreamResponse) -> None:
    """The staff headers; a streamed answer sets them itself before it starts."""
    if response.prepared:
        return
    for name, value in STAFF_HEADERS.items():
        response.headers[name] = value
    response.headers.setdefault("Content-Security-Policy", csp(None))


def error_page(request: web.Request, status: int, heading: str, message: str) -> web.Response:
    session = request.get(SESSION_KEY)
    context = {"title": heading, "heading": heading, "message": message, "session": session}
    context["csrf"] = session.csrf if session is not None else ""
    return render(request, "staff/error.html", context, status=status)


# The signed-in session of this request (set by sessions.require), for the page header.
SESSION_KEY = "staff_session"


@web.middleware
async def html_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Staff refusals and failures as HTML pages; every staff answer gets the staff headers."""
    try:
        response = await handler(request)
    except SignInRequired as exc:
        from service.http.staff.login import sign_in_page  # the login page is the answer to "sign in first"

        response = await sign_in_page(request, notice=exc.message, status=exc.status)
    except StaffRefusal as exc:
        response = error_page(request, exc.status, exc.heading, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = "There is no such page." if exc.status == 404 else exc.reason
        response = error_page(request, exc.status, exc.reason, reason)
    except ApiError as exc:
        response = error_page(request, exc.status, exc.title, str(exc.detail or exc.title))
    except StoreUnavailable as exc:
        log.warning("store unavailable", reason=str(exc), path=request.path)
        response = error_page(request, 503, "Temporarily unavailable", "The service is busy; try again in a moment.")
    except Exception:
        log.exception("unhandled error", path=request.path)
        response = error_page(request, 500, "Something went wrong", "Nothing was saved twice; try again.")
    apply_staff_headers(response)
    return response
