"""Redis records of agencies, their API-key hashes and the system pepper.

An agency is one hash (slug, status, origins, wrapped keys, processor
settings); API keys are found by their keyed hash in one round trip, agency
record included.  Shredding deletes the wrapped keys first, which alone makes
every ciphertext of the agency unreadable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as redis
import redis.exceptions as redis_exc

from service.adapters.keyring import WrappedAgencyKeys
from service.adapters.redis_base import (
    AGENCIES_KEY,
    SYSTEM_KEY,
    agency_control_pattern,
    agency_data_pattern,
    agency_key,
    api_key_key,
    redis_errors,
    scan_batches,
    text_of,
)
from service.domain.agencies import Agency, AgencyStatus, KeyKind
from service.domain.processing import ProcessorConfig, destinations_from_json
from service.domain.velocity import VelocityOverrides

_RESOLVE_API_KEY = """
-- KEYS: api key entry.  ARGV: agency key prefix.  Returns {entry, agency hash as a flat list} or false.
local entry = redis.call('GET', KEYS[1])
if not entry then return false end
local agency_id = string.match(entry, '^(%S+)')
return {entry, redis.call('HGETALL', ARGV[1] .. agency_id)}
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


@dataclass(frozen=True)
class AgencyRow:
    """An agency and its wrapped keys as stored."""

    agency: Agency
    keys: WrappedAgencyKeys
    api_key_hashes: tuple[tuple[str, KeyKind], ...]


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
        velocity=VelocityOverrides.from_json(text.get("velocity")),
    )
    keys = WrappedAgencyKeys(
        current_version=int(text.get("dk_current", b"0")),
        data_keys=data_keys,
        fingerprint_key=text.get("fk", b""),
    )
    hashes = tuple((h, KeyKind(k)) for h, k in json.loads(text.get("api_keys", b"[]")))
    return AgencyRow(agency, keys, hashes)


class AgencyRecords:
    """Agency, API-key and system-secret operations of the vault store."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._resolve_api_key = client.register_script(_RESOLVE_API_KEY)
        self._create_agency = client.register_script(_CREATE_AGENCY)

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
        return None if value is None else text_of(value)

    async def agency(self, agency_id: str) -> AgencyRow | None:
        with redis_errors():
            fields = cast(dict[bytes, bytes], await self.redis.hgetall(agency_key(agency_id)))
        return _decode_agency(agency_id, fields) if fields else None

    async def agencies(self) -> list[AgencyRow]:
        """Every agency (two round trips: the index, then the records)."""
        with redis_errors():
            index = await self.redis.hgetall(AGENCIES_KEY)
            ids = sorted(text_of(v) for v in cast(dict[bytes, bytes], index).values())
            async with self.redis.pipeline(transaction=False) as pipe:
                for agency_id in ids:
                    pipe.hgetall(agency_key(agency_id))
                rows = await pipe.execute()
        return [_decode_agency(i, cast(dict[bytes, bytes], r)) for i, r in zip(ids, rows, strict=True) if r]

    async def resolve_api_key(self, key_hash: str) -> tuple[KeyKind, AgencyRow] | None:
        """The key's kind and its agency in one round trip, or None for an unknown key."""
        with redis_errors():
            found = await self._resolve_api_key(keys=[api_key_key(key_hash)], args=[agency_key("")])
        if not found:
            return None
        entry, flat = found
        agency_id, kind = text_of(entry).split(" ", 1)
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
            key_fields = [n for n in (text_of(x) for x in names) if n.startswith("dk:") or n == "fk"]
            async with self.redis.pipeline(transaction=True) as pipe:
                if key_fields:
                    pipe.hdel(record, *key_fields)
                pipe.hset(record, mapping={"status": str(AgencyStatus.SHREDDED), "dk_current": 0, "api_keys": "[]"})
                for key_hash, _ in api_keys:
                    pipe.delete(api_key_key(key_hash))
                await pipe.execute()
            removed = 0
            for pattern in (agency_control_pattern(agency_id), agency_data_pattern(agency_id)):
                async for _, batch in scan_batches(self.redis, pattern):
                    if batch:
                        removed += int(await self.redis.unlink(*batch))  # split per slot on a cluster
        return removed
