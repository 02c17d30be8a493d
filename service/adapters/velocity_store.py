"""Velocity limits in Redis: a gate that rides in the same script (and round trip) as the write it guards.

``gated(body)`` turns a store's Lua script into one that first runs the
velocity gate and runs ``body`` only when every limit lets the request
through, so a token write or a charge start costs no extra round trip and a
refused request writes nothing but its trip counter.  The gate is
all-or-nothing: it checks every limit, and consumes from all of them only
when none refuses (a refused request costs no one's allowance).

Each limit is a GCRA token bucket: one key holding the bucket's theoretical
arrival time (TAT, milliseconds).  ``N per P`` means an interval T = P/N per
request and a burst of N: a request is allowed when ``max(TAT, now) + T - now
<= P``.  Times come from the service's clock (``now_ms``), so tests move them
without sleeping; key expiry is only garbage collection.

Key layout (every key under the agency's ``{agency}`` hash tag: on one server
the gate and the write it guards are one atomic script; on a Redis Cluster the
write is in a data shard, so the gate runs just before it, see GatedScript.
An address is limited per agency, and one agency's trips never limit
another)::

    cv:{<agency>}:vel:<action>:<dimension>:<bucket>   string  TAT of one bucket (bucket: keyed hash, "-" for the agency)
    cv:{<agency>}:vel:tight                           string  ms until which the agency's limits are tightened
    cv:{<agency>}:vel:tight:address:<bucket>          string  ms until which that address's limits are tightened
    cv:{<agency>}:vel:ratio:<window>                  hash    a (charge attempts), d (declines) in that window
    cv:{<agency>}:vel:ratio:address:<bucket>:<window> hash    the same for one address
    cv:{<agency>}:vel:trips                           hash    <limit name> -> refusals; tightened.agency/address
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as redis

from service.adapters.redis_base import is_cluster, redis_errors, text_of
from service.domain.velocity import DeclinePlan, GatePlan, LimitExceeded, Tightening

REFUSED: bytes = b"velocity_refused"
#: How far a bucket may overshoot its period through floating-point rounding of the stored TAT.
_EPSILON_MS = 1

_GATE_LUA = """
-- The velocity gate.  KEYS[1..nk] and ARGV[3..2+na] are the gate's own (see gate_call):
-- KEYS: agency tightening, address tightening (or the agency's again), trips, bucket 1..n, ratio keys...
-- ARGV: now ms, tightening factor, n, ratio ttl ms, then per bucket: count, period ms, name, scope
local function velocity_gate(nk)
  if nk == 0 then return nil end
  local now = tonumber(ARGV[3])
  local factor = tonumber(ARGV[4])
  local n = tonumber(ARGV[5])
  local ratio_ttl = tonumber(ARGV[6])
  local agency_tight = tonumber(redis.call('GET', KEYS[1]) or 0) > now
  local address_tight = KEYS[2] ~= KEYS[1] and tonumber(redis.call('GET', KEYS[2]) or 0) > now
  local tats = {}
  local tripped = {}
  local wait = 0
  for i = 1, n do
    local a = 6 + (i - 1) * 4
    local count = tonumber(ARGV[a + 1])
    local period = tonumber(ARGV[a + 2])
    local scope = ARGV[a + 4]
    if (agency_tight and scope == 'agency') or (address_tight and scope == 'address') then
      count = math.max(1, math.floor(count / factor))
    end
    local tat = tonumber(redis.call('GET', KEYS[3 + i]) or 0)
    if tat < now then tat = now end
    local next_tat = tat + period / count
    if next_tat - now > period + EPSILON then
      tripped[#tripped + 1] = ARGV[a + 3]
      wait = math.max(wait, next_tat - now - period)
    else
      tats[i] = next_tat
    end
  end
  if #tripped > 0 then
    for _, name in ipairs(tripped) do redis.call('HINCRBY', KEYS[3], name, 1) end
    return {'velocity_refused', math.ceil(wait), unpack(tripped)}
  end
  for i = 1, n do
    redis.call('SET', KEYS[3 + i], string.format('%.3f', tats[i]), 'PX', math.ceil(tats[i] - now) + 1000)
  end
  for i = 4 + n, nk do
    redis.call('HINCRBY', KEYS[i], 'a', 1)
    redis.call('PEXPIRE', KEYS[i], ratio_ttl)
  end
  return nil
end
""".replace("EPSILON", str(_EPSILON_MS))

_GATED_PREFIX = """
local refused = velocity_gate(tonumber(ARGV[1]))
if refused then return refused end
local KEYS = {unpack(KEYS, tonumber(ARGV[1]) + 1)}
local ARGV = {unpack(ARGV, tonumber(ARGV[2]) + 3)}
"""

_DECLINE_LUA = """
-- KEYS: agency tightening, address tightening (or the agency's again), trips,
--       agency ratio previous, current, [address ratio previous, current]
-- ARGV: previous window weight, threshold, min attempts agency, min attempts address,
--       now ms, tighten ms, ratio ttl ms
local weight = tonumber(ARGV[1])
local threshold = tonumber(ARGV[2])
local now = tonumber(ARGV[5])
local until_ms = now + tonumber(ARGV[6])
local function ratio(previous, current, tight, minimum, name)
  redis.call('HINCRBY', current, 'd', 1)
  redis.call('PEXPIRE', current, ARGV[7])
  local pa = tonumber(redis.call('HGET', previous, 'a') or 0)
  local pd = tonumber(redis.call('HGET', previous, 'd') or 0)
  local ca = tonumber(redis.call('HGET', current, 'a') or 0)
  local cd = tonumber(redis.call('HGET', current, 'd') or 0)
  local attempts = pa * weight + ca
  local declines = pd * weight + cd
  local fresh = 0
  if attempts >= minimum and declines >= threshold * attempts then
    if tonumber(redis.call('GET', tight) or 0) <= now then
      fresh = 1
      redis.call('HINCRBY', KEYS[3], name, 1)
    end
    redis.call('SET', tight, string.format('%.0f', until_ms), 'PX', tonumber(ARGV[6]) + 1000)
  end
  return {fresh, math.floor(attempts + 0.5), math.floor(declines + 0.5)}
end
local agency = ratio(KEYS[4], KEYS[5], KEYS[1], tonumber(ARGV[3]), 'tightened.agency')
local address = {0, 0, 0}
if KEYS[6] then address = ratio(KEYS[6], KEYS[7], KEYS[2], tonumber(ARGV[4]), 'tightened.address') end
return {agency[1], address[1], agency[2], agency[3], address[2], address[3]}
"""


def velocity_prefix(agency_id: str) -> str:
    return f"cv:{{{agency_id}}}:vel:"


def bucket_key(agency_id: str, name: str, bucket: str) -> str:
    return f"{velocity_prefix(agency_id)}{name.replace('.', ':')}:{bucket}"


def tight_key(agency_id: str, address: str | None = None) -> str:
    base = f"{velocity_prefix(agency_id)}tight"
    return base if address is None else f"{base}:address:{address}"


def ratio_key(agency_id: str, window: int, address: str | None = None) -> str:
    middle = "ratio" if address is None else f"ratio:address:{address}"
    return f"{velocity_prefix(agency_id)}{middle}:{window}"


def trips_key(agency_id: str) -> str:
    return f"{velocity_prefix(agency_id)}trips"


def gated(body: str) -> str:
    """``body`` (a store's Lua script) behind the velocity gate: KEYS and ARGV start with the gate's own."""
    return _GATE_LUA + _GATED_PREFIX + body


def gate_call(plan: GatePlan | None) -> tuple[list[str], list[Any]]:
    """The gate's KEYS and ARGV, with the two counts the gated script reads first."""
    if plan is None:
        return [], [0, 0]
    agency = plan.agency_id
    keys = [
        tight_key(agency),
        tight_key(agency, plan.address) if plan.address else tight_key(agency),
        trips_key(agency),
    ]
    args: list[Any] = [plan.now_ms, plan.tighten_factor, len(plan.checks), 2 * plan.ratio_window_ms]
    for check in plan.checks:
        keys.append(bucket_key(agency, check.name, check.bucket))
        args += [check.limit.count, check.limit.period_seconds * 1000, check.name, str(check.scope)]
    if plan.count_attempt:
        keys.append(ratio_key(agency, plan.window))
        if plan.address:
            keys.append(ratio_key(agency, plan.window, plan.address))
    return keys, [len(keys), len(args), *args]


class GatedScript:
    """A store script behind the velocity gate; raises LimitExceeded when the gate refuses.

    On a Redis Cluster the gate's keys (``{agency}``) and the body's (a data
    shard) are on different slots, so the gate runs first as its own script
    (one more round trip) and the body only if it passed.
    """

    def __init__(self, client: redis.Redis, body: str) -> None:
        self._split = is_cluster(client)
        self._script = client.register_script(body if self._split else gated(body))
        self._gate = client.register_script(gated(_PASSED)) if self._split else None

    async def __call__(self, plan: GatePlan | None, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        if self._split:
            await self.check_gate(plan)
            with redis_errors():
                return await self._script(keys=keys, args=args)
        gate_keys, gate_args = gate_call(plan)
        reply = await self._script(keys=[*gate_keys, *keys], args=[*gate_args, *args])
        _raise_if_refused(reply)
        return reply

    async def check_gate(self, plan: GatePlan | None) -> None:
        """The gate alone (cluster only: elsewhere it rides in the body's script)."""
        if plan is None:
            return
        assert self._gate is not None, "the gate runs apart from its script on a cluster only"
        gate_keys, gate_args = gate_call(plan)
        with redis_errors():
            reply = await self._gate(keys=gate_keys, args=gate_args)
        _raise_if_refused(reply)


_PASSED = "return 'passed'"


def _raise_if_refused(reply: Any) -> None:
    if isinstance(reply, list) and reply and reply[0] == REFUSED:
        raise LimitExceeded(tuple(text_of(name) for name in reply[2:]), int(reply[1]))


class VelocityStore:
    """Decline ratios, tightening, trip counts: the parts of velocity that are not the gate itself."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._decline = client.register_script(_DECLINE_LUA)

    async def record_decline(self, plan: DeclinePlan) -> Tightening:
        """Count a declined charge; tighten the agency or the address when its decline ratio is too high."""
        agency = plan.agency_id
        keys = [
            tight_key(agency),
            tight_key(agency, plan.address) if plan.address else tight_key(agency),
            trips_key(agency),
            ratio_key(agency, plan.window - 1),
            ratio_key(agency, plan.window),
        ]
        if plan.address:
            keys += [ratio_key(agency, plan.window - 1, plan.address), ratio_key(agency, plan.window, plan.address)]
        args = [
            plan.previous_weight,
            plan.ratio_threshold,
            plan.min_attempts_agency,
            plan.min_attempts_address,
            plan.now_ms,
            plan.tighten_ms,
            2 * plan.ratio_window_ms,
        ]
        with redis_errors():
            reply = [int(x) for x in await self._decline(keys=keys, args=args)]
        return Tightening(bool(reply[0]), bool(reply[1]), reply[2], reply[3], reply[4], reply[5])

    async def trip_counts(self, agency_id: str) -> dict[str, int]:
        with redis_errors():
            raw = cast(dict[bytes, bytes], await self.redis.hgetall(trips_key(agency_id)))
        return {text_of(k): int(v) for k, v in raw.items()}

    async def tightened(self, agency_id: str, now_ms: int) -> tuple[int, int]:
        """(ms until which the agency is tightened, 0 if it is not; how many of its addresses are tightened now)."""
        with redis_errors():
            until = int(await self.redis.get(tight_key(agency_id)) or 0)
            keys = [key async for key in self.redis.scan_iter(match=tight_key(agency_id, "*"), count=500)]
            values = cast(list[bytes | None], await self.redis.mget(keys)) if keys else []
        addresses = sum(1 for value in values if value is not None and int(value) > now_ms)
        return (until if until > now_ms else 0), addresses

    async def lift_tightening(self, agency_id: str) -> int:
        """Forget every tightening of the agency and its addresses; returns how many were lifted."""
        with redis_errors():
            doomed = [tight_key(agency_id)]
            async for key in self.redis.scan_iter(match=tight_key(agency_id, "*"), count=500):
                doomed.append(text_of(key))
            return int(await self.redis.delete(*doomed))
