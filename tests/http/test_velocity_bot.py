"""Issue 6's named test: a card-testing bot run of 1,000 distinct cards from a few addresses is stopped
early, with the default limits, while an ordinary shopper at the same storefront is not refused.

The bot does what card testers do through a hosted payment form: for each
stolen number, tokenize it in the card form (publishable key, the storefront's
Origin) and, when that works, pay a checkout session with the token to learn
whether the card is live.  Its 1,000 numbers are generated when the test runs
(public Visa test prefix, computed Luhn digit) and watched by the leak scans.
Requests go out 32 at a time; the clock does not move, so nothing refills.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from service.adapters.velocity_store import VelocityStore
from service.http.state import SERVICES
from tests.conftest import AgencyKeys, create_agency
from tests.http.velocity_fixtures import (
    DECLINED,
    Client,
    StartApp,
    complete,
    new_session,
    public,
    start_app,
    token_body,
    unsynced_redis,
)
from tests.support import leaks
from tests.support.cards import VISA
from tests.support.generated_cards import distinct_cards
from tests.support.redis_server import RedisServer
from tests.support.staff_pages import audit_records

BOT_ADDRESSES = ("203.0.113.5", "203.0.113.6", "203.0.113.7")
SHOPPER = "198.51.100.23"
IN_FLIGHT = 32


async def bot_run(client: Client, agency: AgencyKeys, cards: list[str]) -> dict[str, collections.Counter[str]]:
    """Each card from the next address in turn; what each step answered, per address."""
    outcomes: dict[str, collections.Counter[str]] = {address: collections.Counter() for address in BOT_ADDRESSES}
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def try_card(index: int, number: str) -> None:
        address = BOT_ADDRESSES[index % len(BOT_ADDRESSES)]
        headers = public(agency, address)
        async with gate:
            tokenized = await client.post("/v1/tokens", json=token_body(number), headers=headers)
            outcomes[address][f"token {tokenized.status}"] += 1
            if tokenized.status != 201:
                return
            session = await new_session(client, agency, f"BOT-{index}", amount=100)
            paid = await complete(client, session, (await tokenized.json())["id"], headers)
            outcomes[address][f"pay {paid.status}"] += 1

    await asyncio.gather(*(try_card(i, number) for i, number in enumerate(cards)))
    return outcomes


async def shopper(client: Client, agency: AgencyKeys) -> list[tuple[str, int]]:
    """One address, a typo, a declined card, then another card that pays."""
    headers = public(agency, SHOPPER)
    steps: list[tuple[str, int]] = []
    session = await new_session(client, agency, "FL-2026-0042")
    typo = VISA[:-1] + str((int(VISA[-1]) + 1) % 10)  # one digit off: fails the Luhn check
    steps.append(("typo", (await client.post("/v1/tokens", json=token_body(typo), headers=headers)).status))
    for label, number in (("declined card", DECLINED), ("second card", VISA)):
        tokenized = await client.post("/v1/tokens", json=token_body(number), headers=headers)
        steps.append((f"tokenize {label}", tokenized.status))
        token: dict[str, Any] = await tokenized.json()
        steps.append((f"pay with {label}", (await complete(client, session, token["id"], headers)).status))
    return steps


class TestCardTestingBot:
    async def test_a_bot_run_of_a_thousand_cards_is_stopped_early_and_a_shopper_is_not(
        self, start_app: StartApp, unsynced_redis: RedisServer
    ) -> None:
        # The shipped defaults: 10 tokens and 5 charges per address per 10 minutes.
        client = await start_app(redis=unsynced_redis)
        agency = await create_agency(client)
        cards = distinct_cards(1000)
        assert len(set(cards)) == 1000

        outcomes = await bot_run(client, agency, cards)

        # Ten tokens per address, then nothing: 30 of 1,000 cards tokenized, 15 of them tried on a payment.
        for address in BOT_ADDRESSES:
            seen = outcomes[address]
            assert seen["token 201"] == 10, (address, seen)
            assert seen["token 429"] == sum(seen.values()) - seen["token 201"] - seen["pay 200"] - seen["pay 429"]
            assert seen["pay 200"] == 5, (address, seen)
            assert seen["pay 429"] == 5, (address, seen)
        tested = sum(seen["pay 200"] for seen in outcomes.values())
        assert tested == 15  # the bot learned whether 15 of its 1,000 cards work
        counts = await VelocityStore(client.app[SERVICES].store.redis).trip_counts(agency.id)
        assert counts == {"tokens.address": 970, "charges.address": 15}
        trips = [r for r in await audit_records(client, agency.id) if r.action == "velocity.trip"]
        # Audited as samples (1st, 10th, 100th... per address and minute, plus the previous minute's total),
        # never one record per refusal: a bot must not be able to fill the audit store.  A slow run may cross
        # a minute boundary, so the bound is per address and minute: two kinds x (three thresholds + a summary).
        per_minute = collections.Counter((r.source, int(r.at // 60)) for r in trips)
        assert 3 <= len(trips) < 100, len(trips)
        assert max(per_minute.values()) <= 2 * 4, per_minute
        assert {r.source for r in trips} == set(BOT_ADDRESSES)

        # Meanwhile an ordinary shopper at the same storefront is never refused.
        assert await shopper(client, agency) == [
            ("typo", 422),
            ("tokenize declined card", 201),
            ("pay with declined card", 402),
            ("tokenize second card", 201),
            ("pay with second card", 200),
        ]
        assert await VelocityStore(client.app[SERVICES].store.redis).trip_counts(agency.id) == counts

        # None of the 1,000 numbers reached Redis in the clear (checked again with the AOF at teardown;
        # the session guard scans the logs).
        assert not leaks.redis_findings(unsynced_redis.client())


__all__ = ["start_app", "unsynced_redis"]  # fixtures, imported for pytest
