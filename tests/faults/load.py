"""A small concurrent load of token and charge requests, and the bookkeeping the fault tests assert on.

Workers loop until told to stop: create a token, then charge it (sandbox
processor, an Idempotency-Key and an order reference of its own).  Every
request is bounded by ``BOUND``; an answer is either a 2xx (remembered as
acknowledged), a 503 ``store_unavailable`` problem (remembered, the charge to
be retried), or wrong (kept for the assertion message).  Afterwards
``verify`` reads back everything acknowledged, and ``retry_failed_charges``
replays the 503'd charges with their keys and checks that no order was charged
twice; ``finish_load`` stops the load and does both.  Works with an in-process
``TestClient`` or an ``aiohttp.ClientSession`` with a base URL: both take
``post(path, json=..., headers=...)``.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from tests.support.cards import CVC, VISA

BOUND = 10.0
CARD = {"card": {"number": VISA, "exp_month": 12, "exp_year": 2031, "cvc": CVC}}
_serial = itertools.count(1)


@dataclass
class LoadResult:
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed_charges: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    timeouts: int = 0
    wrong: list[str] = field(default_factory=list)
    phase: str = "before"  # the test moves it on: "fault", "after"
    acknowledged: collections.Counter[str] = field(default_factory=collections.Counter)  # 2xx per phase

    def summary(self) -> str:
        return (
            f"{len(self.tokens)} tokens and {len(self.charges)} charges acknowledged, "
            f"{len(self.failed_charges)} charges refused with 503, statuses {dict(self.statuses)}, "
            f"{self.timeouts} timeouts, acknowledged per phase {dict(self.acknowledged)}"
        )


async def _answer(request: Any) -> tuple[int, str, str]:
    async with asyncio.timeout(BOUND):
        resp = await request
        return resp.status, resp.content_type, await resp.text()


async def _send(result: LoadResult, kind: str, request: Any) -> tuple[int, dict[str, Any]] | None:
    try:
        status, content_type, text = await _answer(request)
    except TimeoutError:
        result.timeouts += 1
        return None
    result.statuses[f"{kind} {status}"] += 1
    body: dict[str, Any] = json.loads(text) if text else {}
    if status == 503:
        if content_type != "application/problem+json" or body.get("code") != "store_unavailable":
            result.wrong.append(f"{kind}: 503 that is not a store_unavailable problem: {text[:300]}")
    elif not 200 <= status < 300:
        result.wrong.append(f"{kind}: {status} {text[:300]}")
    return status, body


async def _worker(session: Any, auth: dict[str, str], stop: asyncio.Event, result: LoadResult, run: str) -> None:
    while not stop.is_set():
        answer = await _send(result, "token", session.post("/v1/tokens", json=CARD, headers=auth))
        if answer is None or answer[0] != 201:
            await asyncio.sleep(0.01)
            continue
        token = answer[1]
        result.tokens[token["id"]] = token
        result.acknowledged[result.phase] += 1
        serial = next(_serial)
        key = f"{run}-charge-{serial}"
        body = {"token": token["id"], "amount": 100 + serial % 900, "order_reference": key}
        headers = {**auth, "Idempotency-Key": key}
        answer = await _send(result, "charge", session.post("/v1/charges", json=body, headers=headers))
        if answer is None:
            continue
        if answer[0] == 201:
            result.charges[answer[1]["id"]] = answer[1]
            result.acknowledged[result.phase] += 1
        elif answer[0] == 503:
            result.failed_charges.append((key, body))


async def run_load(
    session: Any, auth: dict[str, str], stop: asyncio.Event, result: LoadResult, *, workers: int, run: str
) -> LoadResult:
    """Run ``workers`` loops until ``stop``; the caller holds ``result`` to move its ``phase`` on meanwhile."""
    await asyncio.gather(*(_worker(session, auth, stop, result, run) for _ in range(workers)))
    return result


async def verify(session: Any, auth: dict[str, str], result: LoadResult) -> list[str]:
    """Every acknowledged token and charge, read back: what is missing or changed is lost."""
    lost = []
    for token_id, token in result.tokens.items():
        status, _, text = await _answer(session.get(f"/v1/tokens/{token_id}", headers=auth))
        if status != 200:
            lost.append(f"token {token_id}: {status}")
        elif json.loads(text)["card"] != token["card"]:
            lost.append(f"token {token_id}: changed")
    for charge_id, charge in result.charges.items():
        status, _, text = await _answer(session.get(f"/v1/charges/{charge_id}", headers=auth))
        if status != 200:
            lost.append(f"charge {charge_id}: {status}")
        elif json.loads(text)["status"] != charge["status"]:
            lost.append(f"charge {charge_id}: {charge['status']} became {json.loads(text)['status']}")
    return lost


#: How often a client retries a charge that keeps answering 503 (a replica still resyncing after a failover).
RETRIES_OF_A_503 = 5


async def retry_failed_charges(session: Any, auth: dict[str, str], result: LoadResult) -> list[str]:
    """Replay each 503'd charge with its key: a charge or "in progress", never a second charge for an order."""
    problems = []
    for key, body in result.failed_charges:
        for _ in range(RETRIES_OF_A_503):  # a 503 says "retry shortly": a client does, with the same key
            status, _, text = await _answer(
                session.post("/v1/charges", json=body, headers={**auth, "Idempotency-Key": key})
            )
            if status != 503:
                break
            await asyncio.sleep(1.0)
        if status not in (200, 201, 402, 409):
            problems.append(f"retry of {key}: {status} {text[:200]}")
        if status == 409 and json.loads(text).get("code") != "idempotency_request_in_progress":
            problems.append(f"retry of {key}: {text[:200]}")
    for key, _ in [*result.failed_charges, *((c["order_reference"], c) for c in result.charges.values())]:
        status, _, text = await _answer(session.get("/v1/charges", params={"order_reference": key}, headers=auth))
        charged = [c for c in json.loads(text)["data"] if c["status"] in ("succeeded", "requires_capture")]
        if len(charged) > 1:
            problems.append(f"order {key} charged {len(charged)} times")
    return problems


async def finish_load(
    session: Any, auth: dict[str, str], stop: asyncio.Event, load: asyncio.Task[LoadResult], result: LoadResult
) -> tuple[list[str], list[str]]:
    """Stop the load and wait for it; then what was lost (``verify``) and what the retries found wrong
    (``retry_failed_charges``)."""
    stop.set()
    await load
    return await verify(session, auth, result), await retry_failed_charges(session, auth, result)
