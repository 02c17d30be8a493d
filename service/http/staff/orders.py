"""The order pages: the order form, its submission, the receipt, the orders list and its CSV, refund and void.

The form's card number and security code are never written back into a
page: a re-rendered form keeps every other field and asks for those two
again.  Submitting answers 303 to the receipt (post/redirect/get), so a
reload of the receipt never posts again; a second post of the same form
lands on the same receipt through the form's nonce.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from service.domain.audit import Action, Outcome
from service.domain.charges import ChargeStatus
from service.domain.exports import csv_line
from service.domain.order_form import STAFF_CHANNELS, check_order_form, format_amount, parse_amount
from service.domain.staff import Permission, allows
from service.domain.staff_sessions import StaffSession
from service.http.elements import BRANDS_JS
from service.http.staff.pages import StaffNotFound, apply_staff_headers, redirect, render, staff_context
from service.http.staff.sessions import actor_of, check_csrf, read_form, require
from service.staff_orders import (
    NOT_SETTLED_MESSAGE,
    SETTLED_MESSAGE,
    OrderFilter,
    OrderRow,
    refundable,
    utc_day_bounds,
)

RECENT_DAYS = 30


def _order_page(
    request: web.Request,
    session: StaffSession,
    nonce: str,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    return render(
        request,
        "staff/order_new.html",
        {
            "title": "New order",
            "session": session,
            "csrf": session.csrf,
            "nonce_field": nonce,
            "values": values or {"channel": "phone"},
            "errors": errors or {},
            "channels": [str(c) for c in STAFF_CHANNELS],
            "brands_sri": BRANDS_JS.sri,
        },
        status=status,
    )


async def new_order(request: web.Request) -> web.Response:
    session = await require(request, Permission.TAKE_ORDERS)
    nonce = await staff_context(request).orders.new_form(session)
    return _order_page(request, session, nonce)


async def submit_order(request: web.Request) -> web.Response:
    session = await require(request, Permission.TAKE_ORDERS)
    form = await read_form(request)
    actor = actor_of(request, session)
    await check_csrf(request, form, session.csrf, actor)
    ctx = staff_context(request)
    nonce = form.get("form_id", "")
    today = dt.datetime.fromtimestamp(ctx.clock(), tz=dt.UTC).date()
    check = check_order_form(form, today)
    if check.card_in_wrong_field:
        await ctx.auditor.record(
            actor, Action.ORDER_INPUT, Outcome.REFUSED, "-", "card number in " + ", ".join(check.card_in_wrong_field)
        )
    if check.order is None:
        return _order_page(request, session, nonce, values=check.keep, errors=check.errors, status=422)
    result = await ctx.orders.take(session, actor, nonce, check.order)
    if result.kind == "limited":  # velocity limits: the same form (its nonce is free again), 429
        page = _order_page(request, session, nonce, values=check.keep, errors=result.errors, status=429)
        page.headers["Retry-After"] = str(result.retry_after)
        return page
    if result.kind == "refused":
        if "form" in result.errors:
            nonce = await ctx.orders.new_form(session)
        return _order_page(request, session, nonce, values=check.keep, errors=result.errors, status=422)
    return redirect(f"/staff/orders/{result.charge_id}" + ("?again=1" if result.kind == "duplicate" else ""))


async def _visible_order(request: web.Request, session: StaffSession) -> OrderRow:
    ctx = staff_context(request)
    charge_id = request.match_info["charge_id"]
    row = await ctx.orders.get(session, charge_id)
    if row is None:
        await ctx.auditor.record(actor_of(request, session), Action.ORDER_VIEW, Outcome.REFUSED, charge_id, "not found")
        raise StaffNotFound("There is no such order, or it is not yours to see.")
    return row


def _receipt_context(request: web.Request, session: StaffSession, row: OrderRow, **extra: Any) -> dict[str, Any]:
    """The receipt offers Void while the sale can be voided (not settled as far as the vault knows), else Refund."""
    charge = row.charge
    now = staff_context(request).clock()
    acts = allows(session.role, Permission.VOID_REFUND)
    voidable = charge.voidable(now)
    return {
        "title": f"Order {charge.order_reference or charge.id}",
        "session": session,
        "csrf": session.csrf,
        "row": row,
        "charge": charge,
        "voidable": voidable,
        "settled": charge.settled(now),
        "may_refund": acts and not voidable and refundable(charge),
        "may_void": acts and voidable,
        "remaining": charge.amount_captured - charge.amount_refunded,
        "error": "",
        "notice": "",
        **extra,
    }


def _refusal(request: web.Request, session: StaffSession, row: OrderRow, message: str) -> web.Response:
    """The receipt with why this action is not possible now, and the action that is (409)."""
    return render(request, "staff/receipt.html", _receipt_context(request, session, row, error=message), status=409)


async def receipt(request: web.Request) -> web.Response:
    session = await require(request)
    row = await _visible_order(request, session)
    notice = "This form had already been submitted; here is the order it made." if request.query.get("again") else ""
    return render(request, "staff/receipt.html", _receipt_context(request, session, row, notice=notice))


async def refund_confirm(request: web.Request) -> web.Response:
    session = await require(request, Permission.VOID_REFUND)
    row = await _visible_order(request, session)
    ctx = staff_context(request)
    if row.charge.voidable(ctx.clock()):
        return _refusal(request, session, row, NOT_SETTLED_MESSAGE)
    if not refundable(row.charge):
        return _refusal(request, session, row, "This order has nothing left to refund.")
    nonce = await ctx.orders.new_form(session, Action.REFUND, row.charge.id)
    context = _receipt_context(request, session, row, nonce_field=nonce, action="refund", errors={})
    context["amount_value"] = format_amount(context["remaining"]).replace(",", "")
    return render(request, "staff/confirm.html", context)


async def refund_submit(request: web.Request) -> web.Response:
    session = await require(request, Permission.VOID_REFUND)
    form = await read_form(request)
    actor = actor_of(request, session)
    await check_csrf(request, form, session.csrf, actor)
    row = await _visible_order(request, session)
    ctx = staff_context(request)
    try:
        amount = parse_amount(form.get("amount", ""))
    except ValueError as exc:
        context = _receipt_context(
            request, session, row, nonce_field=form.get("form_id", ""), action="refund", errors={"amount": str(exc)}
        )
        context["amount_value"] = form.get("amount", "")[:20]
        return render(request, "staff/confirm.html", context, status=422)
    result = await ctx.orders.refund(session, actor, row.charge.id, form.get("form_id", ""), amount)
    return await _after_action(request, session, row, result.kind, result.message)


async def void_confirm(request: web.Request) -> web.Response:
    session = await require(request, Permission.VOID_REFUND)
    row = await _visible_order(request, session)
    ctx = staff_context(request)
    if row.charge.settled(ctx.clock()):
        return _refusal(request, session, row, SETTLED_MESSAGE)
    if not row.charge.voidable(ctx.clock()):
        return _refusal(request, session, row, f"A {row.charge.status} order cannot be voided.")
    nonce = await ctx.orders.new_form(session, Action.VOID, row.charge.id)
    context = _receipt_context(request, session, row, nonce_field=nonce, action="void", errors={})
    return render(request, "staff/confirm.html", context)


async def void_submit(request: web.Request) -> web.Response:
    session = await require(request, Permission.VOID_REFUND)
    form = await read_form(request)
    actor = actor_of(request, session)
    await check_csrf(request, form, session.csrf, actor)
    row = await _visible_order(request, session)
    result = await staff_context(request).orders.void(session, actor, row.charge.id, form.get("form_id", ""))
    return await _after_action(request, session, row, result.kind, result.message)


async def _after_action(
    request: web.Request, session: StaffSession, row: OrderRow, kind: str, message: str
) -> web.Response:
    fresh = await staff_context(request).orders.get(session, row.charge.id) or row
    status = 200 if kind == "done" else (409 if kind == "duplicate" else 422)
    context = _receipt_context(
        request, session, fresh, notice=message if kind == "done" else "", error=message if kind != "done" else ""
    )
    return render(request, "staff/receipt.html", context, status=status)


# -- the list and its export ----------------------------------------------------------------------


def _filter_from(request: web.Request, now: float) -> tuple[OrderFilter, dict[str, str], dict[str, str]]:
    query = {k: request.query.get(k, "").strip()[:64] for k in ("status", "channel", "staff", "q", "from", "to")}
    errors: dict[str, str] = {}
    today = dt.datetime.fromtimestamp(now, tz=dt.UTC).date()
    since, _ = utc_day_bounds(today - dt.timedelta(days=RECENT_DAYS))
    until = float("inf")
    for name in ("from", "to"):
        if query[name]:
            try:
                day = dt.date.fromisoformat(query[name])
            except ValueError:
                errors[name] = "Use a date like 2026-01-31."
                continue
            start, end = utc_day_bounds(day)
            if name == "from":
                since = start
            else:
                until = end
    if query["status"] and query["status"] not in {str(s) for s in ChargeStatus}:
        errors["status"] = "Choose a status from the list."
    wanted = OrderFilter(
        status=query["status"] if "status" not in errors else "",
        channel=query["channel"],
        staff=query["staff"].lower(),
        reference=query["q"],
        since=since,
        until=until,
    )
    return wanted, query, errors


async def orders_list(request: web.Request) -> web.Response:
    session = await require(request)
    if not (allows(session.role, Permission.VIEW_OWN_ORDERS) or allows(session.role, Permission.VIEW_TEAM_ORDERS)):
        await require(request, Permission.VIEW_OWN_ORDERS)  # records the refusal and raises
    ctx = staff_context(request)
    now = ctx.clock()
    wanted, query, errors = _filter_from(request, now)
    rows = await ctx.orders.list(session, wanted)
    today_start, _ = utc_day_bounds(dt.datetime.fromtimestamp(now, tz=dt.UTC).date())
    return render(
        request,
        "staff/orders.html",
        {
            "title": "Orders",
            "session": session,
            "csrf": session.csrf,
            "today": [r for r in rows if r.meta.created >= today_start],
            "earlier": [r for r in rows if r.meta.created < today_start],
            "query": query,
            "errors": errors,
            "statuses": [str(s) for s in ChargeStatus],
            "channels": [str(c) for c in STAFF_CHANNELS],
            "may_export": allows(session.role, Permission.EXPORT_ORDERS),
            "export_query": request.query_string,
        },
        status=422 if errors else 200,
    )


ORDER_CSV_HEADER = (
    "taken_at_utc",
    "charge_id",
    "status",
    "amount",
    "amount_refunded",
    "currency",
    "channel",
    "order_reference",
    "description",
    "brand",
    "last4",
    "auth_code",
    "processor_transaction_id",
    "taken_by",
)


async def orders_csv(request: web.Request) -> web.StreamResponse:
    session = await require(request, Permission.EXPORT_ORDERS)
    ctx = staff_context(request)
    wanted, _, _ = _filter_from(request, ctx.clock())
    rows = await ctx.orders.list(session, wanted)
    await ctx.auditor.record(
        actor_of(request, session),
        Action.EXPORT_ORDERS,
        Outcome.SUCCESS,
        "-",
        f"{len(rows)} orders; {request.query_string}",
    )
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="orders.csv"',
        }
    )
    apply_staff_headers(response)
    await response.prepare(request)
    await response.write(csv_line(ORDER_CSV_HEADER).encode())
    for row in rows:
        c = row.charge
        line = csv_line(
            [
                dt.datetime.fromtimestamp(row.meta.created, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
                c.id,
                c.status,
                format_amount(c.amount).replace(",", ""),
                format_amount(c.amount_refunded).replace(",", ""),
                c.currency,
                row.meta.channel,
                c.order_reference or "",
                c.description or "",
                c.card_brand,
                c.card_last4,
                c.processor.auth_code or "",
                c.processor.transaction_id or "",
                row.meta.username,
            ]
        )
        await response.write(line.encode())
    await response.write_eof()
    return response
