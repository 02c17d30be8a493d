"""The audit trail pages: auditors read their agency's records with filters and export them as CSV.

Reading the trail and exporting it are themselves recorded.  The page shows
the result of the last `cardvault audit verify` (or `audit maintain`) of the
agency's hash chain: walking a year of records on every page view would not
be cheap, and the operator's daily run keeps it fresh.
"""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from service.audit import AuditFilter
from service.domain.audit import FIELDS, Action, Outcome, utc_text
from service.domain.exports import csv_line
from service.domain.staff import Permission
from service.http.staff.pages import apply_staff_headers, render, staff_context
from service.http.staff.sessions import actor_of, require
from service.staff_orders import utc_day_bounds

PAGE_LIMIT = 500
EXPORT_LIMIT = 5000


def chain_line(status: dict[str, str] | None) -> str:
    """One sentence on the chain's last verification, for the page."""
    if status is None:
        return "The hash chain of this trail has not been verified yet (cardvault audit verify)."
    when = utc_text(float(status["at"]))
    if status["ok"] == "1":
        return f"Chain verified {when}: intact, {status['records']} records."
    return f"Chain verification {when} found {status['problems']} problems: tell your administrator."


def _filter_from(request: web.Request) -> tuple[AuditFilter, dict[str, str], dict[str, str]]:
    query = {k: request.query.get(k, "").strip()[:64] for k in ("action", "outcome", "actor", "from", "to")}
    errors: dict[str, str] = {}
    bounds: dict[str, float | None] = {"from": None, "to": None}
    for name in ("from", "to"):
        if query[name]:
            try:
                start, end = utc_day_bounds(dt.date.fromisoformat(query[name]))
            except ValueError:
                errors[name] = "Use a date like 2026-01-31."
                continue
            bounds[name] = start if name == "from" else end
    if query["outcome"] and query["outcome"] not in {str(o) for o in Outcome}:
        errors["outcome"] = "Choose an outcome from the list."
    wanted = AuditFilter(
        action=query["action"],
        outcome=query["outcome"] if "outcome" not in errors else "",
        actor=query["actor"].lower(),
        since=bounds["from"],
        until=bounds["to"],
    )
    return wanted, query, errors


async def audit_page(request: web.Request) -> web.Response:
    session = await require(request, Permission.VIEW_AUDIT)
    ctx = staff_context(request)
    wanted, query, errors = _filter_from(request)
    records = await ctx.auditor.search(session.agency_id, wanted, PAGE_LIMIT)
    status = await ctx.auditor.chain_status(session.agency_id)
    await ctx.auditor.record(actor_of(request, session), Action.VIEW_AUDIT, Outcome.SUCCESS, "-", request.query_string)
    return render(
        request,
        "staff/audit.html",
        {
            "title": "Audit trail",
            "session": session,
            "csrf": session.csrf,
            "records": records,
            "query": query,
            "errors": errors,
            "actions": sorted(str(a) for a in Action),
            "outcomes": [str(o) for o in Outcome],
            "export_query": request.query_string,
            "limit": PAGE_LIMIT,
            "chain": chain_line(status),
            "chain_ok": status is not None and status["ok"] == "1",
        },
        status=422 if errors else 200,
    )


async def audit_csv(request: web.Request) -> web.StreamResponse:
    session = await require(request, Permission.VIEW_AUDIT)
    ctx = staff_context(request)
    wanted, _, _ = _filter_from(request)
    records = await ctx.auditor.search(session.agency_id, wanted, EXPORT_LIMIT)
    await ctx.auditor.record(
        actor_of(request, session), Action.EXPORT_AUDIT, Outcome.SUCCESS, "-", f"{len(records)} records"
    )
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="audit.csv"',
        }
    )
    apply_staff_headers(response)
    await response.prepare(request)
    await response.write(csv_line(("id", "when_utc", *FIELDS, "seq", "hash")).encode())
    for record in records:
        fields = record.to_fields()
        row = [record.id, record.when, *(fields[name] for name in FIELDS), record.seq, record.hash]
        await response.write(csv_line(row).encode())
    await response.write_eof()
    return response
