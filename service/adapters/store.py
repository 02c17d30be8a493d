"""The vault store: tokens and CVC ciphertexts, health, key-rotation support (agencies in agency_records).

Every Redis adapter lives in ``service.adapters``; this module and its siblings
(agency_records, charges_store, idempotency_store, forward_store) are the only
code that talks to Redis.

Key layout (the tags are explained in ``redis_base``; ``<s>`` is a data shard,
0-f: the card's for its tokens and CVCs, see ``card_shard`` and ``shard_of``)::

    cv:system                          hash   pepper (wrapped)
    cv:{cv}:agencies                   hash   slug -> agency id
    cv:{cv}:apikey:<keyed hash>        string "<agency id> <kind>"   (expires when a rotated key's grace ends)
    cv:{cv}:agency:<agency>            hash   slug, status, origins, created, api_keys, dk_current, dk:<v>, fk
    cv:{<agency>.<s>}:tok:<token id>   string card ciphertext, expires with the token
    cv:{<agency>.<s>}:cvc:<token id>   string CVC ciphertext, expires after the CVC TTL
    cv:{<agency>.<s>}:fpi:<fp[:3]>     zset   "<fingerprint[3:]>:<token id>" of the cards whose fingerprint
                                              starts with fp[:3] (score 0, read by lexical range);
                                              expires with its last token
    cv:{<agency>}:api-keys-grace       hash   keys of earlier rotations still in their grace period
    cv:{<agency>}:dk-rotated           string when the data key was last rotated (retire waits out the auth cache)
    cv:{<agency>}:rewrap-cursor        string "v<target version>:<scan position>" of an interrupted rewrap

Charges and idempotency records live beside these (see charges_store and
idempotency_store), in the data shards.

Nothing here is plaintext card data: values are ciphertexts, keys hold ids and
keyed hashes.  Every write a request makes is one script or one pipeline,
which is one round trip.  Redis failures surface as StoreUnavailable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import cast

import redis.asyncio as redis
import redis.exceptions as redis_exc

from service.adapters.agency_records import AgencyRecords, AgencyRow
from service.adapters.opaque_ids import OPAQUE_IDS
from service.adapters.redis_base import (
    agency_data_pattern,
    agency_key,
    api_key_key,
    card_shard,
    cvc_key,
    data_prefix,
    fingerprint_in_bucket,
    fingerprint_key,
    fingerprint_member,
    get_many,
    id_in_shard,
    redis_errors,
    scan_batches,
    text_of,
    token_key,
)
from service.adapters.velocity_store import GatedScript
from service.domain.velocity import GatePlan

__all__ = ["AgencyRow", "PutResult", "VaultStore", "agency_key", "api_key_key", "cvc_key", "redis_errors", "token_key"]

FINGERPRINT_LIST_LIMIT = 1000  # read at most this many; the API shows the oldest 100

_PUT_CARD_LUA = """
-- KEYS: token, cvc, fingerprint index
-- ARGV: token blob, token expire-at ms, cvc blob or '', cvc expire-at ms, token id,
--       dedupe '1'|'0', token key prefix, cvc key prefix, format ('opaque'|'pan_shaped'), now ms,
--       fingerprint (without its bucket prefix: see fingerprint_member)
local fp = ARGV[11]
if ARGV[6] == '1' then
  local want_opaque = ARGV[9] == 'opaque'
  for _, member in ipairs(redis.call('ZRANGEBYLEX', KEYS[3], '[' .. fp .. ':', '(' .. fp .. ';')) do
    local id = string.sub(member, #fp + 2)
    if (string.sub(id, 1, 4) == 'tok_') == want_opaque then
      local blob = redis.call('GET', ARGV[7] .. id)
      if blob then
        return {'existing', id, blob, redis.call('EXISTS', ARGV[8] .. id)}
      end
      redis.call('ZREM', KEYS[3], member)
    end
  end
end
if not redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2], 'NX') then
  return {'collision'}
end
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[2], ARGV[3], 'PXAT', ARGV[4])
end
redis.call('ZADD', KEYS[3], 0, fp .. ':' .. ARGV[5])
if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[2]) - tonumber(ARGV[10]) then
  redis.call('PEXPIREAT', KEYS[3], ARGV[2])
end
return {'created'}
"""

_TOKENS_BY_FINGERPRINT = """
-- KEYS: fingerprint index; ARGV: token key prefix, cvc key prefix, limit, fingerprint (without its bucket prefix)
local out = {}
local found = 0
local fp = ARGV[4]
for _, member in ipairs(redis.call('ZRANGEBYLEX', KEYS[1], '[' .. fp .. ':', '(' .. fp .. ';')) do
  local id = string.sub(member, #fp + 2)
  local blob = redis.call('GET', ARGV[1] .. id)
  if not blob then
    redis.call('ZREM', KEYS[1], member)
  elseif found < tonumber(ARGV[3]) then
    found = found + 1
    table.insert(out, id)
    table.insert(out, blob)
    table.insert(out, redis.call('EXISTS', ARGV[2] .. id))
  end
end
return out
"""

_DELETE_CARD_LUA = """
-- KEYS: token, cvc.  Returns the token's ciphertext, or false when there was none.
local blob = redis.call('GET', KEYS[1])
if not blob then return false end
redis.call('DEL', KEYS[1], KEYS[2])
return blob
"""

_COMPARE_AND_SWAP = """
-- KEYS: key.  ARGV: expected value, new value.  Keeps the key's TTL.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
"""


def card_prefixes(agency_id: str, fingerprint: str) -> tuple[str, str]:
    """The token and CVC key prefixes of the card's shard, for the scripts that walk its fingerprint set."""
    prefix = data_prefix(agency_id, card_shard(fingerprint))
    return f"{prefix}tok:", f"{prefix}cvc:"


@dataclass(frozen=True)
class PutResult:
    outcome: str  # "created" | "existing" | "collision"
    existing_id: str | None = None
    existing_blob: bytes | None = None
    existing_cvc: bool = False


class VaultStore(AgencyRecords):
    """Async Redis operations, each a single round trip unless its docstring says otherwise."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client)
        self._put_token = GatedScript(client, _PUT_CARD_LUA)  # the velocity gate rides in the same round trip
        self._by_fingerprint = client.register_script(_TOKENS_BY_FINGERPRINT)
        self._delete_token = client.register_script(_DELETE_CARD_LUA)
        self._compare_and_swap = client.register_script(_COMPARE_AND_SWAP)

    # -- health ------------------------------------------------------------
    async def ping(self) -> None:
        with redis_errors():
            await self.redis.ping()

    async def persistence(self) -> dict[str, str]:
        """appendonly / appendfsync as the server reports them (empty if CONFIG is disabled)."""
        with redis_errors():
            try:
                raw = await self.redis.config_get("append*")
            except redis_exc.ResponseError:
                return {}
        return {text_of(k): text_of(v) for k, v in cast(dict[bytes, bytes], raw).items()}

    # -- tokens ------------------------------------------------------------------
    @staticmethod
    def new_token_id(fingerprint: str, draw: Callable[[], str]) -> str:
        """A fresh id from ``draw`` that lives in the card's data shard, beside its fingerprint set."""
        return id_in_shard(card_shard(fingerprint), draw)

    @staticmethod
    def new_opaque_token_id(fingerprint: str) -> str:
        """A fresh opaque id (as ``new_opaque_token_id`` makes them) in the card's data shard.

        The same ids as ``new_token_id(fingerprint, new_opaque_token_id)`` gives, uniform over the
        card-free ids of the shard, taken from the process's ids sorted by shard (``opaque_ids``)
        instead of drawn until one lands there.
        """
        return OPAQUE_IDS.take(card_shard(fingerprint))

    async def put_token(
        self,
        agency_id: str,
        token_id: str,
        *,
        blob: bytes,
        expires_at_ms: int,
        fingerprint: str,
        cvc_blob: bytes | None,
        cvc_expires_at_ms: int,
        deduplicate: bool,
        token_format: str,
        now_ms: int,
        gate: GatePlan | None = None,
    ) -> PutResult:
        """Write a token (and CVC) atomically, or find the card's live token when deduplicating.

        With a ``gate`` the same script checks the velocity limits first (LimitExceeded: nothing written).
        """
        with redis_errors():
            reply = await self._put_token(
                gate,
                keys=[
                    token_key(agency_id, token_id),
                    cvc_key(agency_id, token_id),
                    fingerprint_key(agency_id, fingerprint),
                ],
                args=[
                    blob,
                    expires_at_ms,
                    cvc_blob or b"",
                    cvc_expires_at_ms,
                    token_id,
                    "1" if deduplicate else "0",
                    *card_prefixes(agency_id, fingerprint),
                    token_format,
                    now_ms,
                    fingerprint_in_bucket(fingerprint),
                ],
            )
        outcome = text_of(reply[0])
        if outcome == "existing":
            return PutResult("existing", text_of(reply[1]), reply[2], bool(reply[3]))
        return PutResult(outcome)

    async def set_cvc(self, agency_id: str, token_id: str, blob: bytes, expires_at_ms: int) -> None:
        with redis_errors():
            await self.redis.set(cvc_key(agency_id, token_id), blob, pxat=expires_at_ms)

    async def get_token(self, agency_id: str, token_id: str) -> tuple[bytes | None, bool]:
        """The token's ciphertext (None if absent) and whether its CVC is still held."""
        with redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(token_key(agency_id, token_id))
                pipe.exists(cvc_key(agency_id, token_id))
                blob, has_cvc = await pipe.execute()
        return blob, bool(has_cvc)

    async def delete_token(self, agency_id: str, token_id: str) -> bytes | None:
        """Remove the token and its CVC; returns the removed ciphertext, None if there was none."""
        with redis_errors():
            blob = await self._delete_token(keys=[token_key(agency_id, token_id), cvc_key(agency_id, token_id)])
        return blob or None

    async def forget_fingerprint(self, agency_id: str, fingerprint: str, token_id: str) -> None:
        with redis_errors():
            await self.redis.zrem(fingerprint_key(agency_id, fingerprint), fingerprint_member(fingerprint, token_id))

    async def tokens_by_fingerprint(self, agency_id: str, fingerprint: str) -> list[tuple[str, bytes, bool]]:
        with redis_errors():
            flat = await self._by_fingerprint(
                keys=[fingerprint_key(agency_id, fingerprint)],
                args=[
                    *card_prefixes(agency_id, fingerprint),
                    FINGERPRINT_LIST_LIMIT,
                    fingerprint_in_bucket(fingerprint),
                ],
            )
        return [(text_of(flat[i]), flat[i + 1], bool(flat[i + 2])) for i in range(0, len(flat), 3)]

    # -- key rotation support -------------------------------------------------------
    async def ciphertext_batches(self, agency_id: str, position: str = "") -> AsyncIterator[tuple[str, list[bytes]]]:
        """(next position, token and CVC keys) batches of one agency, resumable from a position ("" when done)."""
        with redis_errors():
            async for next_position, keys in scan_batches(self.redis, agency_data_pattern(agency_id), position):
                yield next_position, [k for k in keys if b":tok:" in k or b":cvc:" in k]

    async def values(self, keys: Sequence[bytes]) -> list[bytes | None]:
        with redis_errors():
            return await get_many(self.redis, keys)

    async def compare_and_swap(self, key: bytes, old: bytes, new: bytes) -> bool:
        with redis_errors():
            return bool(await self._compare_and_swap(keys=[key], args=[old, new]))

    async def get_raw(self, key: str) -> bytes | None:
        with redis_errors():
            return cast(bytes | None, await self.redis.get(key))

    async def set_raw(self, key: str, value: str | bytes) -> None:
        with redis_errors():
            await self.redis.set(key, value)

    async def delete_raw(self, key: str) -> None:
        with redis_errors():
            await self.redis.delete(key)
