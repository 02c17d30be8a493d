"""The forward proxy's two Redis operations: load the referenced tokens, then take their CVCs.

Both are single scripts over keys of one agency (one hash slot, one round
trip, atomic).  They are separate on purpose: the vault checks everything it
can (every token exists and is this agency's, every needed CVC is still there,
every value renders, the destination's address is allowed) *before* a CVC is
destroyed, so a refused forward never costs the cardholder their CVC.  Taking
is all or nothing: if any CVC is gone by then, none is taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as redis

from service.adapters.redis_base import cvc_key, redis_errors, token_key

_LOAD_LUA = """
-- KEYS: token keys (ARGV[1] of them), then CVC keys.
-- Returns each token's ciphertext (false when absent), then 1/0 per CVC key.
local n = tonumber(ARGV[1])
local out = {}
for i = 1, n do out[i] = redis.call('GET', KEYS[i]) end
for i = n + 1, #KEYS do out[i] = redis.call('EXISTS', KEYS[i]) end
return out
"""

_TAKE_CVCS_LUA = """
-- KEYS: CVC keys.  All or nothing: {0, index of the first missing} or {1, ciphertexts...}, deleted.
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then return {0, i} end
end
local out = {1}
for i = 1, #KEYS do
  out[i + 1] = redis.call('GET', KEYS[i])
  redis.call('DEL', KEYS[i])
end
return out
"""


@dataclass(frozen=True)
class LoadedTokens:
    """Ciphertexts by token id (None: no such token for this agency) and which CVCs are still held."""

    cards: dict[str, bytes | None]
    has_cvc: dict[str, bool]


@dataclass(frozen=True)
class TakenCvcs:
    """The CVC ciphertexts taken, or the first token whose CVC was already gone (nothing taken then)."""

    blobs: dict[str, bytes]
    missing: str | None = None


class ForwardStore:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._load = client.register_script(_LOAD_LUA)
        self._take = client.register_script(_TAKE_CVCS_LUA)

    async def load(self, agency_id: str, token_ids: Sequence[str], cvc_token_ids: Sequence[str]) -> LoadedTokens:
        """Every token's ciphertext and whether each CVC is held: one round trip, nothing changed."""
        if not token_ids:
            return LoadedTokens({}, {})
        keys = [token_key(agency_id, t) for t in token_ids] + [cvc_key(agency_id, t) for t in cvc_token_ids]
        with redis_errors():
            reply = await self._load(keys=keys, args=[len(token_ids)])
        values = list(reply) + [None] * (len(keys) - len(reply))
        cards = {t: (values[i] or None) for i, t in enumerate(token_ids)}
        held = {t: bool(values[len(token_ids) + i]) for i, t in enumerate(cvc_token_ids)}
        return LoadedTokens(cards, held)

    async def take_cvcs(self, agency_id: str, token_ids: Sequence[str]) -> TakenCvcs:
        """Read and delete the CVCs of ``token_ids``, all or none, in one round trip."""
        if not token_ids:
            return TakenCvcs({})
        with redis_errors():
            reply = await self._take(keys=[cvc_key(agency_id, t) for t in token_ids])
        if int(reply[0]) == 0:
            return TakenCvcs({}, missing=token_ids[int(reply[1]) - 1])
        return TakenCvcs(dict(zip(token_ids, reply[1:], strict=True)))
