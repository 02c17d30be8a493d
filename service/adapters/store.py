"""The one place that talks to Redis: agencies, API-key hashes, token and CVC ciphertexts.

Key layout (``{agency}`` is a Redis Cluster hash tag, so one agency's keys
share a slot and its scripts stay atomic)::

    cv:system                      hash   pepper (wrapped)
    cv:agencies                    hash   slug -> agency id
    cv:apikey:<keyed hash>         string "<agency id> <kind>"   (expires when a rotated key's grace ends)
    cv:{<agency>}:agency           hash   slug, status, origins, created, api_keys, dk_current, dk:<v>, fk
    cv:{<agency>}:tok:<token id>   string card ciphertext, expires with the token
    cv:{<agency>}:cvc:<token id>   string CVC ciphertext, expires after the CVC TTL
    cv:{<agency>}:fp:<fingerprint> set    token ids of that card, expires with its last token
    cv:{<agency>}:api-keys-grace   hash   keys of earlier rotations still in their grace period
    cv:{<agency>}:dk-rotated       string when the data key was last rotated (retire waits out the auth cache)
    cv:{<agency>}:rewrap-cursor    string "v<target version>:<SCAN cursor>" of an interrupted rewrap

Charges and idempotency records live beside these (see charges_store and
idempotency_store), under the same ``{agency}`` hash tag.

Nothing here is plaintext card data: values are ciphertexts, keys hold ids and
keyed hashes.  Every write a request makes is one script or one pipeline,
which is one round trip.  Redis failures surface as StoreUnavailable.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as redis
import redis.exceptions as redis_exc

from service.adapters.keyring import WrappedAgencyKeys
from service.domain.agencies import Agency, AgencyStatus, KeyKind
from service.domain.processing import ProcessorConfig, destinations_from_json
from service.errors import StoreUnavailable

SYSTEM_KEY = "cv:system"
AGENCIES_KEY = "cv:agencies"
FINGERPRINT_LIST_LIMIT = 1000  # read at most this many; the API shows the oldest 100


def agency_key(agency_id: str) -> str:
    return f"cv:{{{agency_id}}}:agency"


def token_key(agency_id: str, token_id: str) -> str:
    return f"cv:{{{agency_id}}}:tok:{token_id}"


def cvc_key(agency_id: str, token_id: str) -> str:
    return f"cv:{{{agency_id}}}:cvc:{token_id}"


def fingerprint_key(agency_id: str, fingerprint: str) -> str:
    return f"cv:{{{agency_id}}}:fp:{fingerprint}"


def api_key_key(key_hash: str) -> str:
    return f"cv:apikey:{key_hash}"


_UNAVAILABLE_REPLIES = (
    "OOM",
    "READONLY",
    "MISCONF",
    "NOREPLICAS",
    "LOADING",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "TRYAGAIN",
)


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """Turn Redis trouble into StoreUnavailable; let programming errors through."""
    try:
        yield
    except (redis_exc.ConnectionError, redis_exc.TimeoutError) as exc:
        raise StoreUnavailable(f"Redis unreachable: {type(exc).__name__}") from None
    except redis_exc.ResponseError as exc:
        reply = str(exc)
        if reply.startswith(_UNAVAILABLE_REPLIES) or "NOPERM" in reply or "NOAUTH" in reply:
            raise StoreUnavailable(f"Redis refused: {reply.split(' ', 1)[0]}") from None
        raise


_PUT_CARD_LUA = """
-- KEYS: token, cvc, fingerprint set
-- ARGV: token blob, token expire-at ms, cvc blob or '', cvc expire-at ms, token id,
--       dedupe '1'|'0', token key prefix, cvc key prefix, format ('opaque'|'pan_shaped'), now ms
if ARGV[6] == '1' then
  local want_opaque = ARGV[9] == 'opaque'
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    if (string.sub(id, 1, 4) == 'tok_') == want_opaque then
      local blob = redis.call('GET', ARGV[7] .. id)
      if blob then
        return {'existing', id, blob, redis.call('EXISTS', ARGV[8] .. id)}
      end
      redis.call('SREM', KEYS[3], id)
    end
  end
end
if not redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2], 'NX') then
  return {'collision'}
end
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[2], ARGV[3], 'PXAT', ARGV[4])
end
redis.call('SADD', KEYS[3], ARGV[5])
if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[2]) - tonumber(ARGV[10]) then
  redis.call('PEXPIREAT', KEYS[3], ARGV[2])
end
return {'created'}
"""

_TOKENS_BY_FINGERPRINT = """
-- KEYS: fingerprint set; ARGV: token key prefix, cvc key prefix, limit
local out = {}
local found = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local blob = redis.call('GET', ARGV[1] .. id)
  if not blob then
    redis.call('SREM', KEYS[1], id)
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

_RESOLVE_API_KEY = """
-- KEYS: api key entry.  Returns {entry, agency hash as a flat list} or false.
local entry = redis.call('GET', KEYS[1])
if not entry then return false end
local agency_id = string.match(entry, '^(%S+)')
return {entry, redis.call('HGETALL', 'cv:{' .. agency_id .. '}:agency')}
"""

_CREATE_AGENCY = """
-- KEYS: agencies index, agency hash.  ARGV: slug, agency id, then field/value pairs
-- of the agency hash, then '--', then api-key entries as key/value pairs.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local i = 3
while ARGV[i] ~= '--' do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
i = i + 1
while ARGV[i] do
  redis.call('SET', ARGV[i], ARGV[i + 1])
  i = i + 2
end
return 1
"""

_COMPARE_AND_SWAP = """
-- KEYS: key.  ARGV: expected value, new value.  Keeps the key's TTL.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
"""


@dataclass(frozen=True)
class AgencyRow:
    """An agency and its wrapped keys as stored."""

    agency: Agency
    keys: WrappedAgencyKeys
    api_key_hashes: tuple[tuple[str, KeyKind], ...]


@dataclass(frozen=True)
class PutResult:
    outcome: str  # "created" | "existing" | "collision"
    existing_id: str | None = None
    existing_blob: bytes | None = None
    existing_cvc: bool = False


def _decode_agency(agency_id: str, fields: Mapping[bytes, bytes]) -> AgencyRow:
    text = {k.decode(): v for k, v in fields.items()}
    data_keys = {int(k[3:]): v for k, v in text.items() if k.startswith("dk:")}
    agency = Agency(
        id=agency_id,
        slug=text["slug"].decode(),
        status=AgencyStatus(text["status"].decode()),
        origins=tuple(json.loads(text["origins"])),
        created=int(text["created"]),
        processor=ProcessorConfig.from_json(text.get("processor")),
        max_amount=int(text["max_amount"]) if text.get("max_amount") else None,
        destinations=destinations_from_json(text.get("destinations")),
    )
    keys = WrappedAgencyKeys(
        current_version=int(text.get("dk_current", b"0")),
        data_keys=data_keys,
        fingerprint_key=text.get("fk", b""),
    )
    hashes = tuple((h, KeyKind(k)) for h, k in json.loads(text.get("api_keys", b"[]")))
    return AgencyRow(agency, keys, hashes)


class VaultStore:
    """Async Redis operations, each a single round trip unless its docstring says otherwise."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._put_token = client.register_script(_PUT_CARD_LUA)
        self._by_fingerprint = client.register_script(_TOKENS_BY_FINGERPRINT)
        self._delete_token = client.register_script(_DELETE_CARD_LUA)
        self._resolve_api_key = client.register_script(_RESOLVE_API_KEY)
        self._create_agency = client.register_script(_CREATE_AGENCY)
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
        return {_text(k): _text(v) for k, v in cast(dict[bytes, bytes], raw).items()}

    # -- system --------------------------------------------------------------
    async def system_pepper(self, new_wrapped: bytes) -> bytes:
        """The stored pepper, storing ``new_wrapped`` first if there is none yet."""
        with redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(SYSTEM_KEY, "pepper", new_wrapped)
                pipe.hget(SYSTEM_KEY, "pepper")
                _, pepper = await pipe.execute()
        return cast(bytes, pepper)

    async def replace_system_pepper(self, old: bytes, new: bytes) -> bool:
        with redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                await pipe.watch(SYSTEM_KEY)
                if await pipe.hget(SYSTEM_KEY, "pepper") != old:
                    return False
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hset(SYSTEM_KEY, "pepper", new)
                await pipe.execute()
        return True

    # -- agencies --------------------------------------------------------------
    async def create_agency(
        self, agency: Agency, keys: WrappedAgencyKeys, api_keys: Sequence[tuple[str, KeyKind]]
    ) -> bool:
        """Store a new agency with its keys; False when the slug is taken."""
        fields: list[Any] = [
            "slug",
            agency.slug,
            "status",
            str(agency.status),
            "origins",
            json.dumps(list(agency.origins)),
            "created",
            agency.created,
            "dk_current",
            keys.current_version,
            "fk",
            keys.fingerprint_key,
            "api_keys",
            json.dumps([[h, str(k)] for h, k in api_keys]),
        ]
        for version, blob in keys.data_keys.items():
            fields += [f"dk:{version}", blob]
        entries: list[Any] = []
        for key_hash, kind in api_keys:
            entries += [api_key_key(key_hash), f"{agency.id} {kind}"]
        with redis_errors():
            created = await self._create_agency(
                keys=[AGENCIES_KEY, agency_key(agency.id)],
                args=[agency.slug, agency.id, *fields, "--", *entries],
            )
        return bool(created)

    async def agency_id_for_slug(self, slug: str) -> str | None:
        with redis_errors():
            value = cast(bytes | None, await self.redis.hget(AGENCIES_KEY, slug))
        return None if value is None else _text(value)

    async def agency(self, agency_id: str) -> AgencyRow | None:
        with redis_errors():
            fields = cast(dict[bytes, bytes], await self.redis.hgetall(agency_key(agency_id)))
        return _decode_agency(agency_id, fields) if fields else None

    async def agencies(self) -> list[AgencyRow]:
        """Every agency (two round trips: the index, then the records)."""
        with redis_errors():
            index = await self.redis.hgetall(AGENCIES_KEY)
            ids = sorted(_text(v) for v in cast(dict[bytes, bytes], index).values())
            async with self.redis.pipeline(transaction=False) as pipe:
                for agency_id in ids:
                    pipe.hgetall(agency_key(agency_id))
                rows = await pipe.execute()
        return [_decode_agency(i, cast(dict[bytes, bytes], r)) for i, r in zip(ids, rows, strict=True) if r]

    async def resolve_api_key(self, key_hash: str) -> tuple[KeyKind, AgencyRow] | None:
        """The key's kind and its agency in one round trip, or None for an unknown key."""
        with redis_errors():
            found = await self._resolve_api_key(keys=[api_key_key(key_hash)])
        if not found:
            return None
        entry, flat = found
        agency_id, kind = _text(entry).split(" ", 1)
        if not flat:
            return None
        fields = cast(dict[bytes, bytes], dict(zip(flat[::2], flat[1::2], strict=True)))
        return KeyKind(kind), _decode_agency(agency_id, fields)

    async def replace_api_keys(
        self,
        agency_id: str,
        old: Sequence[tuple[str, KeyKind]],
        new: Sequence[tuple[str, KeyKind]],
        *,
        grace_seconds: int,
    ) -> None:
        """Install new key hashes; old ones die now or after ``grace_seconds``."""
        with redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                for key_hash, _ in old:
                    if grace_seconds > 0:
                        pipe.expire(api_key_key(key_hash), grace_seconds)
                    else:
                        pipe.delete(api_key_key(key_hash))
                for key_hash, kind in new:
                    pipe.set(api_key_key(key_hash), f"{agency_id} {kind}")
                pipe.hset(agency_key(agency_id), "api_keys", json.dumps([[h, str(k)] for h, k in new]))
                await pipe.execute()

    async def set_agency_fields(self, agency_id: str, fields: Mapping[str, str | bytes | int]) -> None:
        with redis_errors():
            await self.redis.hset(agency_key(agency_id), mapping=dict(fields))  # type: ignore[arg-type]

    async def add_data_key(self, agency_id: str, expected_current: int, wrapped: bytes) -> bool:
        """Add data key version expected_current+1 and make it current; False on a race."""
        key = agency_key(agency_id)
        with redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                await pipe.watch(key)
                current = int(await pipe.hget(key, "dk_current") or 0)
                if current != expected_current:
                    return False
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hset(key, mapping={f"dk:{current + 1}": wrapped, "dk_current": current + 1})
                try:
                    await pipe.execute()
                except redis_exc.WatchError:
                    return False
        return True

    async def retire_data_keys(self, agency_id: str, versions: Sequence[int]) -> None:
        if versions:
            with redis_errors():
                await self.redis.hdel(agency_key(agency_id), *(f"dk:{v}" for v in versions))

    async def shred_agency(self, agency_id: str, api_keys: Sequence[tuple[str, KeyKind]]) -> int:
        """Delete the agency's keys first (that alone shreds), then every ciphertext; returns keys removed."""
        with redis_errors():
            record = agency_key(agency_id)
            names = await self.redis.hkeys(record)
            key_fields = [n for n in (_text(x) for x in names) if n.startswith("dk:") or n == "fk"]
            async with self.redis.pipeline(transaction=True) as pipe:
                if key_fields:
                    pipe.hdel(record, *key_fields)
                pipe.hset(record, mapping={"status": str(AgencyStatus.SHREDDED), "dk_current": 0, "api_keys": "[]"})
                for key_hash, _ in api_keys:
                    pipe.delete(api_key_key(key_hash))
                await pipe.execute()
            removed = 0
            async for batch in self._scan_batches(f"cv:{{{agency_id}}}:*"):
                doomed = [k for k in batch if _text(k) != record]
                if doomed:
                    removed += int(await self.redis.unlink(*doomed))
        return removed

    # -- tokens ------------------------------------------------------------------
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
    ) -> PutResult:
        """Write a token (and CVC) atomically, or find the card's live token when deduplicating."""
        with redis_errors():
            reply = await self._put_token(
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
                    token_key(agency_id, ""),
                    cvc_key(agency_id, ""),
                    token_format,
                    now_ms,
                ],
            )
        outcome = _text(reply[0])
        if outcome == "existing":
            return PutResult("existing", _text(reply[1]), reply[2], bool(reply[3]))
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
            await self.redis.srem(fingerprint_key(agency_id, fingerprint), token_id)

    async def tokens_by_fingerprint(self, agency_id: str, fingerprint: str) -> list[tuple[str, bytes, bool]]:
        with redis_errors():
            flat = await self._by_fingerprint(
                keys=[fingerprint_key(agency_id, fingerprint)],
                args=[token_key(agency_id, ""), cvc_key(agency_id, ""), FINGERPRINT_LIST_LIMIT],
            )
        return [(_text(flat[i]), flat[i + 1], bool(flat[i + 2])) for i in range(0, len(flat), 3)]

    # -- key rotation support -------------------------------------------------------
    async def ciphertext_batches(self, agency_id: str, cursor: int = 0) -> AsyncIterator[tuple[int, list[bytes]]]:
        """(next cursor, token and CVC keys) batches of one agency, resumable from a cursor."""
        with redis_errors():
            while True:
                cursor, keys = await self.redis.scan(cursor=cursor, match=f"cv:{{{agency_id}}}:*", count=500)
                wanted = [k for k in cast(list[bytes], keys) if b":tok:" in k or b":cvc:" in k]
                yield cursor, wanted
                if cursor == 0:
                    return

    async def values(self, keys: Sequence[bytes]) -> list[bytes | None]:
        with redis_errors():
            return cast(list[bytes | None], await self.redis.mget(keys)) if keys else []

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

    async def _scan_batches(self, pattern: str) -> AsyncIterator[list[bytes]]:
        cursor = 0
        while True:
            cursor, keys = await self.redis.scan(cursor=cursor, match=pattern, count=500)
            if keys:
                yield cast(list[bytes], keys)
            if cursor == 0:
                return


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
