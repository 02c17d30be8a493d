"""The forward proxy's two Redis operations: load the referenced tokens, then take their CVCs.

Both are single scripts over keys of one agency (one round trip, atomic).
On a Redis Cluster a forward's tokens may sit in different data shards
(slots): loading then reads each shard's keys with its own script, and taking
takes shard by shard, putting back what it took if a later shard finds a CVC
gone (so a refused take still costs no CVC).  They are separate on purpose: the vault checks everything it
can (every token exists and is this agency's, every needed CVC is still there,
every value renders, the destination's address is allowed) *before* a CVC is
destroyed, so a refused forward never costs the cardholder their CVC.  Taking
is all or nothing: if any CVC is gone by then, none is taken.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as redis

from service.adapters.redis_base import cvc_key, is_cluster, redis_errors, shard_of, token_key
from service.errors import StoreUnavailable

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
-- KEYS: CVC keys.  All or nothing: {0, index of the first missing} or {1, ciphertext, ms left, ...}, deleted.
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then return {0, i} end
end
local out = {1}
for i = 1, #KEYS do
  table.insert(out, redis.call('GET', KEYS[i]))
  table.insert(out, redis.call('PTTL', KEYS[i]))
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
        self._on_cluster = is_cluster(client)

    def _groups(self, token_ids: Sequence[str]) -> list[list[str]]:
        """The ids one script may read together: all of them, or on a cluster those of each data shard."""
        if not self._on_cluster:
            return [list(token_ids)]
        shards: dict[int, list[str]] = {}
        for token_id in token_ids:
            shards.setdefault(shard_of(token_id), []).append(token_id)
        return list(shards.values())

    async def load(self, agency_id: str, token_ids: Sequence[str], cvc_token_ids: Sequence[str]) -> LoadedTokens:
        """Every token's ciphertext and whether each CVC is held: one round trip (one per shard on a cluster)."""
        cards: dict[str, bytes | None] = {}
        held: dict[str, bool] = {}
        wanted_cvcs = set(cvc_token_ids)
        for group in self._groups(token_ids):
            cvc_group = [t for t in group if t in wanted_cvcs]
            keys = [token_key(agency_id, t) for t in group] + [cvc_key(agency_id, t) for t in cvc_group]
            with redis_errors():
                reply = await self._load(keys=keys, args=[len(group)])
            values = list(reply) + [None] * (len(keys) - len(reply))
            cards.update({t: (values[i] or None) for i, t in enumerate(group)})
            held.update({t: bool(values[len(group) + i]) for i, t in enumerate(cvc_group)})
        held.update({t: False for t in cvc_token_ids if t not in held})
        return LoadedTokens(cards, held)

    async def take_cvcs(self, agency_id: str, token_ids: Sequence[str]) -> TakenCvcs:
        """Read and delete the CVCs of ``token_ids``, all or none, in one round trip (one per shard on a cluster)."""
        taken: dict[str, tuple[bytes, int]] = {}
        for group in self._groups(token_ids):
            try:
                with redis_errors():
                    reply = await self._take(keys=[cvc_key(agency_id, t) for t in group])
            except StoreUnavailable:
                # The forward will not go out: what earlier shards gave up goes back, if Redis takes it.
                with contextlib.suppress(StoreUnavailable):
                    await self._put_back(agency_id, taken)
                raise
            if int(reply[0]) == 0:
                await self._put_back(agency_id, taken)
                return TakenCvcs({}, missing=group[int(reply[1]) - 1])
            for i, token_id in enumerate(group):
                taken[token_id] = (reply[1 + 2 * i], int(reply[2 + 2 * i]))
        return TakenCvcs({t: blob for t, (blob, _) in taken.items()})

    async def _put_back(self, agency_id: str, taken: dict[str, tuple[bytes, int]]) -> None:
        """Restore CVCs taken from earlier shards when a later one refused (cluster only), with their time left."""
        with redis_errors():
            for token_id, (blob, ms_left) in taken.items():
                if ms_left != 0:  # -1: no expiry (never written so, but kept as found)
                    await self.redis.set(
                        cvc_key(agency_id, token_id), blob, px=ms_left if ms_left > 0 else None, nx=True
                    )
