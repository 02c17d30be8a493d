"""The velocity gate and the decline ratios, run by a real redis-server with the time given explicitly.

The gate is composed in front of a small body script of the test's own, the
way the token and charge stores use it: the body must run only when every
limit lets the request through, and see its own KEYS and ARGV.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from service.adapters.velocity_store import GatedScript, VelocityStore, bucket_key, tight_key
from service.domain.velocity import Check, DeclinePlan, GatePlan, Limit, LimitExceeded, Scope
from tests.support.redis_server import RedisServer

T0 = 1_800_000_000_000  # an arbitrary "now", in ms, on a window boundary of 600 s
WINDOW_MS = 600_000

# The body writes its first key to its first argument and answers with what it saw.
_BODY = """
redis.call('SET', KEYS[1], ARGV[1])
return {'written', KEYS[1], ARGV[1], #KEYS, #ARGV}
"""


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[redis.Redis]:
    connection = redis.Redis(port=redis_server.port)
    yield connection
    await connection.aclose()


@pytest.fixture
def agency() -> str:
    return "agy_" + secrets.token_hex(8)


def check(name: str, count: int, period_s: int, bucket: str = "b1", scope: Scope = Scope.NONE) -> Check:
    return Check(name, bucket, Limit(count, period_s), scope)


def gate(agency: str, now_ms: int, *checks: Check, address: str | None = None, attempts: bool = False) -> GatePlan:
    return GatePlan(agency, now_ms, checks, tighten_factor=4, address=address, count_attempt=attempts)


class Guarded:
    """The test body behind the gate; counts what got through."""

    def __init__(self, client: redis.Redis, agency: str) -> None:
        self.script = GatedScript(client, _BODY)
        self.client = client
        self.target = f"cv:{{{agency}}}:body"
        self.passed = 0

    async def __call__(self, plan: GatePlan) -> bool:
        try:
            reply = await self.script(plan, [self.target], ["v"])
        except LimitExceeded:
            return False
        assert reply[0] == b"written"
        self.passed += 1
        return True


def decline(agency: str, now_ms: int, address: str | None = None, minimum: int = 4) -> DeclinePlan:
    return DeclinePlan(
        agency_id=agency,
        now_ms=now_ms,
        address=address,
        ratio_window_ms=WINDOW_MS,
        ratio_threshold=0.5,
        min_attempts_agency=minimum,
        min_attempts_address=minimum,
        tighten_ms=1_800_000,
    )


class TestGate:
    async def test_a_burst_of_the_count_then_one_per_interval(self, client: redis.Redis, agency: str) -> None:
        """5 per 60 s: five at once, the sixth refused until 12 s later, then one more."""
        body = Guarded(client, agency)
        limit = check("tokens.address", 5, 60)
        assert [await body(gate(agency, T0, limit)) for _ in range(6)] == [True] * 5 + [False]
        assert not await body(gate(agency, T0 + 11_900, limit))
        assert await body(gate(agency, T0 + 12_000, limit))
        assert not await body(gate(agency, T0 + 12_000, limit))

    async def test_an_idle_bucket_refills_to_its_count_and_no_further(self, client: redis.Redis, agency: str) -> None:
        body = Guarded(client, agency)
        limit = check("tokens.address", 3, 60)
        assert [await body(gate(agency, T0, limit)) for _ in range(3)] == [True] * 3
        later = T0 + 3_600_000
        assert [await body(gate(agency, later, limit)) for _ in range(4)] == [True] * 3 + [False]

    async def test_the_wait_is_until_the_next_request_fits(self, client: redis.Redis, agency: str) -> None:
        script = GatedScript(client, _BODY)
        limit = check("tokens.card", 2, 60)
        for _ in range(2):
            await script(gate(agency, T0, limit), [f"cv:{{{agency}}}:body"], ["v"])
        with pytest.raises(LimitExceeded) as refused:
            await script(gate(agency, T0 + 5_000, limit), [f"cv:{{{agency}}}:body"], ["v"])
        assert refused.value.names == ("tokens.card",)
        assert 24_000 <= refused.value.wait_ms <= 25_001

    async def test_a_refusal_writes_nothing_and_consumes_no_other_limit(self, client: redis.Redis, agency: str) -> None:
        """All or nothing: with one limit exhausted, the others keep their allowance and the body never runs."""
        body = Guarded(client, agency)
        tight = check("tokens.card", 1, 600, bucket="card")
        roomy = check("tokens.agency", 3, 600, bucket="-")
        assert await body(gate(agency, T0, tight, roomy))
        await client.delete(body.target)
        for _ in range(10):
            assert not await body(gate(agency, T0, tight, roomy))
        assert await client.exists(body.target) == 0
        # The roomy limit still has two of its three: two other cards get through, the third is refused.
        assert await body(gate(agency, T0, check("tokens.card", 1, 600, bucket="c2"), roomy))
        assert await body(gate(agency, T0, check("tokens.card", 1, 600, bucket="c3"), roomy))
        assert not await body(gate(agency, T0, check("tokens.card", 1, 600, bucket="c4"), roomy))

    async def test_every_tripped_limit_is_named_and_counted(self, client: redis.Redis, agency: str) -> None:
        script = GatedScript(client, _BODY)
        first = check("tokens.address", 1, 600, bucket="a")
        second = check("tokens.key", 1, 600, bucket="k")
        await script(gate(agency, T0, first, second), [f"cv:{{{agency}}}:body"], ["v"])
        with pytest.raises(LimitExceeded) as refused:
            await script(gate(agency, T0, first, second), [f"cv:{{{agency}}}:body"], ["v"])
        assert refused.value.names == ("tokens.address", "tokens.key")
        with pytest.raises(LimitExceeded):
            await script(gate(agency, T0, first), [f"cv:{{{agency}}}:body"], ["v"])
        assert await VelocityStore(client).trip_counts(agency) == {"tokens.address": 2, "tokens.key": 1}

    async def test_the_body_sees_only_its_own_keys_and_arguments(self, client: redis.Redis, agency: str) -> None:
        script = GatedScript(client, _BODY)
        target = f"cv:{{{agency}}}:body"
        reply = await script(gate(agency, T0, check("tokens.agency", 9, 60, bucket="-")), [target], ["hello"])
        assert reply == [b"written", target.encode(), b"hello", 1, 1]
        assert await script(None, [target], ["again"]) == [b"written", target.encode(), b"again", 1, 1]
        assert await client.get(target) == b"again"

    async def test_buckets_expire_once_refilled(self, client: redis.Redis, agency: str) -> None:
        """Redis keeps a bucket only while it is not full again (plus a second)."""
        script = GatedScript(client, _BODY)
        await script(gate(agency, T0, check("tokens.address", 4, 60, bucket="a")), [f"cv:{{{agency}}}:body"], ["v"])
        ttl = await client.pttl(bucket_key(agency, "tokens.address", "a"))
        assert 15_000 < ttl <= 16_000


class TestDeclineRatio:
    async def attempts(
        self, client: redis.Redis, agency: str, now: int, count: int, address: str | None = None
    ) -> None:
        body = Guarded(client, agency)
        for _ in range(count):
            assert await body(
                gate(agency, now, check("charges.agency", 10**6, 60, bucket="-"), address=address, attempts=True)
            )

    async def test_below_the_minimum_attempts_nothing_tightens(self, client: redis.Redis, agency: str) -> None:
        store = VelocityStore(client)
        await self.attempts(client, agency, T0, 3)
        for _ in range(3):
            result = await store.record_decline(decline(agency, T0))
        assert not result.agency
        assert (result.agency_attempts, result.agency_declines) == (3, 3)
        assert await store.tightened(agency, T0) == (0, 0)

    async def test_a_high_ratio_tightens_once_and_is_counted(self, client: redis.Redis, agency: str) -> None:
        """Two declines in four attempts reach 50%: tightened for 30 minutes from the last bad decline."""
        store = VelocityStore(client)
        await self.attempts(client, agency, T0, 4)
        assert not (await store.record_decline(decline(agency, T0))).agency
        second = await store.record_decline(decline(agency, T0 + 1_000))
        assert second.agency
        assert (second.agency_attempts, second.agency_declines) == (4, 2)
        assert not (await store.record_decline(decline(agency, T0 + 2_000))).agency  # already tightened
        assert await store.tightened(agency, T0 + 2_000) == (T0 + 2_000 + 1_800_000, 0)
        assert await store.tightened(agency, T0 + 2_000 + 1_800_000) == (0, 0)
        assert (await store.trip_counts(agency))["tightened.agency"] == 1

    async def test_an_approving_majority_keeps_the_limits(self, client: redis.Redis, agency: str) -> None:
        store = VelocityStore(client)
        await self.attempts(client, agency, T0, 10)
        for _ in range(4):
            assert not (await store.record_decline(decline(agency, T0))).agency

    async def test_the_previous_window_fades_out(self, client: redis.Redis, agency: str) -> None:
        """The estimate weighs the previous window by how much of it is still within the last 600 s."""
        store = VelocityStore(client)
        await self.attempts(client, agency, T0, 8)
        for _ in range(3):
            await store.record_decline(decline(agency, T0, minimum=100))
        late = T0 + WINDOW_MS + WINDOW_MS // 2  # half-way through the next window: the old one weighs 0.5
        result = await store.record_decline(decline(agency, late, minimum=100))
        assert (result.agency_attempts, result.agency_declines) == (4, 3)  # 8 * 0.5, 3 * 0.5 + 1 (rounded)

    async def test_a_tightened_agency_divides_its_aggregate_limits_only(self, client: redis.Redis, agency: str) -> None:
        """Agency-scope limits (agency, key) are divided by the factor; card limits never change."""
        store = VelocityStore(client)
        await self.attempts(client, agency, T0, 4)
        for _ in range(4):
            await store.record_decline(decline(agency, T0))
        body = Guarded(client, agency)
        aggregate = check("tokens.agency", 8, 600, bucket="-", scope=Scope.AGENCY)
        assert [await body(gate(agency, T0, aggregate)) for _ in range(3)] == [True, True, False]  # 8 / 4
        card = check("tokens.card", 3, 600, bucket="c", scope=Scope.NONE)
        assert [await body(gate(agency, T0, card)) for _ in range(4)] == [True] * 3 + [False]
        # After the cool-down the full limit is back (the bucket refilled meanwhile too).
        later = T0 + 1_800_001
        assert [await body(gate(agency, later, aggregate)) for _ in range(9)] == [True] * 8 + [False]

    async def test_an_address_is_tightened_alone(self, client: redis.Redis, agency: str) -> None:
        """An address's declines divide that address's limit; other addresses and the agency keep theirs."""
        store = VelocityStore(client)
        await self.attempts(client, agency, T0, 20)  # the agency as a whole: 20 attempts
        await self.attempts(client, agency, T0, 4, address="bad")
        results = [await store.record_decline(decline(agency, T0, address="bad")) for _ in range(3)]
        assert [r.address for r in results] == [False, True, False]  # 2 of 4: tightened (once)
        assert not any(r.agency for r in results)  # 3 of 24 for the agency
        assert await store.tightened(agency, T0) == (0, 1)
        body = Guarded(client, agency)

        def per_address(bucket: str) -> Check:
            return check("tokens.address", 8, 600, bucket=bucket, scope=Scope.ADDRESS)

        assert [await body(gate(agency, T0, per_address("bad"), address="bad")) for _ in range(3)] == [
            True,
            True,
            False,
        ]
        assert [await body(gate(agency, T0, per_address("good"), address="good")) for _ in range(8)] == [True] * 8

    async def test_lifting_forgets_every_tightening(self, client: redis.Redis, agency: str) -> None:
        store = VelocityStore(client)
        await client.set(tight_key(agency), T0 + 10_000)
        await client.set(tight_key(agency, "x"), T0 + 10_000)
        assert await store.tightened(agency, T0) == (T0 + 10_000, 1)
        assert await store.lift_tightening(agency) == 2
        assert await store.tightened(agency, T0) == (0, 0)
