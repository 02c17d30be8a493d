"""Redis records of charges: created once, updated by compare-and-swap, indexed by order reference.

    cv:{<agency>.<s>}:ch:<charge id>        string  charge JSON (no card number: brand, last four, processor ids)
    cv:{<agency>.<s>}:chlock:<charge id>    string  held while a capture, void or refund is at the processor
    cv:{<agency>.<s>}:order:<reference>     set     charge ids with that order reference

Each lives in the data shard of its own id or reference (``redis_base``): a
charge id comes from the Idempotency-Key alone, so a retry finds its charge
without knowing the token.

Starting a charge is one script and one round trip: it creates the charge
record only if that id is new (so a retried request can never reach the
processor twice), reads the token's ciphertext and takes (reads and deletes)
its CVC, because a CVC dies at the first authorization that uses it.

On a Redis Cluster the charge, the token and the order index are on
different slots, so the start is three steps instead (``_start_on_cluster``):
index the id, claim the charge id (an existing record wins, as above), then
take the token and CVC; a token found gone releases the claim.  A crash
between the claim and the take leaves a record ``unknown`` that never reached
the processor, like a crash just after the single script.  Readers of the
index skip ids without a record of that reference.

A start that Redis applied but could not confirm durable (``NotDurable``: the
processor is not called) is undone before the 503, so a retry with the same
Idempotency-Key charges normally instead of finding a charge stuck ``unknown``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as redis

from service.adapters.durability import NotDurable
from service.adapters.redis_base import cvc_key, data_prefix, get_many, is_cluster, redis_errors, shard_of, token_key
from service.adapters.velocity_store import GatedScript
from service.domain.velocity import GatePlan
from service.errors import StoreRefused, StoreUnavailable

_START_CHARGE_LUA = """
-- KEYS: charge, token, cvc, order index (or '').  ARGV: charge JSON, charge id.
-- Returns {'exists', charge} | {'no_token'} | {'started', token blob, cvc blob or false}
local existing = redis.call('GET', KEYS[1])
if existing then return {'exists', existing} end
local card = redis.call('GET', KEYS[2])
if not card then return {'no_token'} end
local cvc = redis.call('GET', KEYS[3])
if cvc then redis.call('DEL', KEYS[3]) end
redis.call('SET', KEYS[1], ARGV[1])
if KEYS[4] ~= '' then redis.call('SADD', KEYS[4], ARGV[2]) end
return {'started', card, cvc}
"""

_REPLACE_LUA = """
-- KEYS: charge.  ARGV: expected JSON, new JSON.  1 when replaced.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_FORGET_START_LUA = """
-- KEYS: charge, order index (or '').  ARGV: the record start wrote, charge id.  Only that record goes.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if KEYS[2] and KEYS[2] ~= '' then redis.call('SREM', KEYS[2], ARGV[2]) end
  return 1
end
return 0
"""

_CLAIM_CHARGE_LUA = """
-- KEYS: charge.  ARGV: charge JSON.  Returns {'exists', charge} | {'claimed'}.
local existing = redis.call('GET', KEYS[1])
if existing then return {'exists', existing} end
redis.call('SET', KEYS[1], ARGV[1])
return {'claimed'}
"""

_TAKE_CARD_LUA = """
-- KEYS: token, cvc.  Returns {'no_token'} | {'started', token blob, cvc blob or false}; the CVC is deleted.
local card = redis.call('GET', KEYS[1])
if not card then return {'no_token'} end
local cvc = redis.call('GET', KEYS[2])
if cvc then redis.call('DEL', KEYS[2]) end
return {'started', card, cvc}
"""

ORDER_READ_LIMIT = 1000  # the API shows the oldest 100 of these


def charge_key(agency_id: str, charge_id: str) -> str:
    return f"{data_prefix(agency_id, shard_of(charge_id))}ch:{charge_id}"


def charge_lock_key(agency_id: str, charge_id: str) -> str:
    return f"{data_prefix(agency_id, shard_of(charge_id))}chlock:{charge_id}"


def order_key(agency_id: str, reference: str) -> str:
    return f"{data_prefix(agency_id, shard_of(reference))}order:{reference}"


def _outcome(reply: list[Any]) -> str:
    return reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])


def _started(reply: list[Any]) -> StartedCharge:
    outcome = _outcome(reply)
    if outcome == "exists":
        return StartedCharge("exists", existing=reply[1])
    if outcome == "no_token":
        return StartedCharge("no_token")
    return StartedCharge("started", card_blob=reply[1], cvc_blob=reply[2] or None)


@dataclass(frozen=True)
class StartedCharge:
    outcome: str  # started | exists | no_token
    existing: bytes | None = None
    card_blob: bytes | None = None
    cvc_blob: bytes | None = None


class ChargeStore:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._start = GatedScript(client, _START_CHARGE_LUA)  # the velocity gate rides in the same round trip
        self._replace = client.register_script(_REPLACE_LUA)
        self._forget_start = client.register_script(_FORGET_START_LUA)
        self._on_cluster = is_cluster(client)
        self._claim = client.register_script(_CLAIM_CHARGE_LUA)
        self._take_card = client.register_script(_TAKE_CARD_LUA)

    async def start(
        self,
        agency_id: str,
        charge_id: str,
        token_id: str,
        record: bytes,
        order_reference: str | None,
        gate: GatePlan | None = None,
    ) -> StartedCharge:
        """With a ``gate`` the velocity limits are checked first (LimitExceeded: nothing written, CVC kept)."""
        if self._on_cluster:
            return await self._start_on_cluster(agency_id, charge_id, token_id, record, order_reference, gate)
        try:
            with redis_errors():
                reply = await self._start(
                    gate,
                    keys=[
                        charge_key(agency_id, charge_id),
                        token_key(agency_id, token_id),
                        cvc_key(agency_id, token_id),
                        order_key(agency_id, order_reference) if order_reference else "",
                    ],
                    args=[record, charge_id],
                )
        except NotDurable:
            await self._undo_start(agency_id, charge_id, record, order_reference)
            raise
        return _started(reply)

    async def _start_on_cluster(
        self,
        agency_id: str,
        charge_id: str,
        token_id: str,
        record: bytes,
        order_reference: str | None,
        gate: GatePlan | None,
    ) -> StartedCharge:
        """The start in per-slot steps (module docstring); the gate is its own script (``GatedScript``)."""
        await self._start.check_gate(gate)
        try:
            with redis_errors():
                if order_reference:
                    await self.redis.sadd(order_key(agency_id, order_reference), charge_id)
                claimed = await self._claim(keys=[charge_key(agency_id, charge_id)], args=[record])
                if _outcome(claimed) == "exists":
                    return _started(claimed)
                taken = await self._take_card(keys=[token_key(agency_id, token_id), cvc_key(agency_id, token_id)])
        except (NotDurable, StoreRefused):
            # Refused (a slot moving, out of memory...): the card was not taken, so the claim goes and the
            # retry with the same key starts afresh. After a lost connection it stays: the take may have run.
            await self._undo_start(agency_id, charge_id, record, None)
            raise
        if _outcome(taken) == "no_token":
            await self._undo_start(agency_id, charge_id, record, None)
        return _started(taken)

    async def token_blob(self, agency_id: str, token_id: str) -> bytes | None:
        """The token's card ciphertext, or None: what a charge's per-card velocity limit reads first."""
        with redis_errors():
            return cast(bytes | None, await self.redis.get(token_key(agency_id, token_id)))

    async def _undo_start(self, agency_id: str, charge_id: str, record: bytes, order_reference: str | None) -> None:
        """Best effort: refused or unconfirmed for the same reason as the start, it is still applied on the master."""
        keys = [charge_key(agency_id, charge_id)]
        if order_reference:
            keys.append(order_key(agency_id, order_reference))
        try:
            with redis_errors():
                await self._forget_start(keys=keys, args=[record, charge_id])
        except StoreUnavailable:
            pass

    async def get(self, agency_id: str, charge_id: str) -> bytes | None:
        with redis_errors():
            return cast(bytes | None, await self.redis.get(charge_key(agency_id, charge_id)))

    async def replace(self, agency_id: str, charge_id: str, expected: bytes, new: bytes) -> bool:
        with redis_errors():
            return bool(await self._replace(keys=[charge_key(agency_id, charge_id)], args=[expected, new]))

    async def by_order_reference(self, agency_id: str, reference: str) -> list[bytes]:
        """Up to ORDER_READ_LIMIT charges with that reference (two round trips: the index, then the records)."""
        with redis_errors():
            ids = list(cast(set[bytes], await self.redis.smembers(order_key(agency_id, reference))))[:ORDER_READ_LIMIT]
            if not ids:
                return []
            values = await get_many(self.redis, [charge_key(agency_id, i.decode()) for i in ids])
        # On a cluster the index is written before the charge starts: skip ids that never started as this order.
        return [v for v in values if v is not None and json.loads(v).get("order_reference") == reference]

    async def lock(self, agency_id: str, charge_id: str, ttl: int) -> bool:
        """One capture/void/refund at a time per charge."""
        with redis_errors():
            return bool(await self.redis.set(charge_lock_key(agency_id, charge_id), "1", nx=True, ex=ttl))

    async def unlock(self, agency_id: str, charge_id: str) -> None:
        with redis_errors():
            await self.redis.delete(charge_lock_key(agency_id, charge_id))
