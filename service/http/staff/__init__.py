"""The staff virtual terminal: HTML pages under /staff/ for phone, fax and mail orders.

A sub-application of its own, so its middleware (refusals as HTML pages,
no-store and a nonce CSP on every answer) and its templates touch nothing of
the JSON API.  Its routes are HTML pages for people, not API operations, and
are left out of openapi.yaml on purpose.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from service.http.staff import audit, login, orders, team
from service.http.staff.pages import FILTERS, html_errors

HTTP_DIR = Path(__file__).resolve().parents[1]
PREFIX = "/staff"
CHARGE_ID = r"{charge_id:ch_[A-Za-z0-9_-]{1,64}}"


def create_staff_app() -> web.Application:
    staff = web.Application(middlewares=[html_errors])
    aiohttp_jinja2.setup(
        staff,
        loader=jinja2.FileSystemLoader(str(HTTP_DIR / "templates")),
        autoescape=True,
        filters=FILTERS,
        undefined=jinja2.StrictUndefined,
    )
    staff.router.add_routes(
        [
            web.get("/", login.home, allow_head=False),
            web.get("/login", login.login_form, allow_head=False),
            web.post("/login", login.login_password),
            web.post("/login/totp", login.login_totp),
            web.post("/logout", login.logout),
            web.get("/enroll", login.enroll_form, allow_head=False),
            web.post("/enroll", login.enroll_submit),
            web.get("/orders/new", orders.new_order, allow_head=False),
            web.post("/orders/new", orders.submit_order),
            web.get("/orders", orders.orders_list, allow_head=False),
            web.get("/orders.csv", orders.orders_csv, allow_head=False),
            web.get(f"/orders/{CHARGE_ID}", orders.receipt, allow_head=False),
            web.get(f"/orders/{CHARGE_ID}/refund", orders.refund_confirm, allow_head=False),
            web.post(f"/orders/{CHARGE_ID}/refund", orders.refund_submit),
            web.get(f"/orders/{CHARGE_ID}/void", orders.void_confirm, allow_head=False),
            web.post(f"/orders/{CHARGE_ID}/void", orders.void_submit),
            web.get("/audit", audit.audit_page, allow_head=False),
            web.get("/audit.csv", audit.audit_csv, allow_head=False),
            web.get("/team", team.team_page, allow_head=False),
            web.post("/team", team.add_member),
            web.post("/team/{staff_id:stf_[0-9a-f]{16}}/disable", team.disable_member),
            web.post("/team/{staff_id:stf_[0-9a-f]{16}}/reset", team.reset_member),
            web.static("/static", HTTP_DIR / "static" / "staff", append_version=False),
        ]
    )
    return staff


def add_staff_app(app: web.Application) -> None:
    app.add_subapp(PREFIX, create_staff_app())
