"""Redis records of orders taken at the virtual terminal: who took each charge, and the agency's order index.

    cv:{<agency>}:staff-orders              sorted set   charge id scored by the time it was taken
    cv:{<agency>}:staff-order:<charge id>   string       OrderMeta JSON: staff id, username, channel, time

The charge itself (status, amount, brand, last four, processor ids) stays
where the charges API keeps it (``charges_store``); listing reads the index
by time, then the charges and these records in one pipeline.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import cast

import redis.asyncio as redis

from service.adapters.charges_store import charge_key
from service.adapters.redis_base import get_many, redis_errors, text_of

LIST_LIMIT = 500


@dataclass(frozen=True)
class OrderMeta:
    charge_id: str
    staff_id: str
    username: str
    channel: str
    created: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes) -> OrderMeta:
        return cls(**json.loads(raw))


def orders_key(agency_id: str) -> str:
    return f"cv:{{{agency_id}}}:staff-orders"


def order_meta_key(agency_id: str, charge_id: str) -> str:
    return f"cv:{{{agency_id}}}:staff-order:{charge_id}"


class StaffOrderStore:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    async def record(self, agency_id: str, meta: OrderMeta) -> None:
        with redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(order_meta_key(agency_id, meta.charge_id), meta.to_json(), nx=True)
                pipe.zadd(orders_key(agency_id), {meta.charge_id: meta.created}, nx=True)
                await pipe.execute()

    async def forget(self, agency_id: str, charge_id: str) -> None:
        with redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(order_meta_key(agency_id, charge_id))
                pipe.zrem(orders_key(agency_id), charge_id)
                await pipe.execute()

    async def meta(self, agency_id: str, charge_id: str) -> OrderMeta | None:
        with redis_errors():
            raw = cast(bytes | None, await self.redis.get(order_meta_key(agency_id, charge_id)))
        return None if raw is None else OrderMeta.from_json(raw)

    async def between(
        self, agency_id: str, start: float, end: float, limit: int = LIST_LIMIT
    ) -> list[tuple[OrderMeta, bytes]]:
        """Orders taken in [start, end], newest first, with their charge JSON (two round trips)."""
        with redis_errors():
            found = await self.redis.zrevrangebyscore(orders_key(agency_id), end, start, start=0, num=limit)
            ids = [text_of(i) for i in cast(list[bytes], found)]
            if not ids:
                return []
            metas = await self.redis.mget([order_meta_key(agency_id, i) for i in ids])
            charges = await get_many(self.redis, [charge_key(agency_id, i) for i in ids])  # in the data shards
        rows: list[tuple[OrderMeta, bytes]] = []
        for meta, charge in zip(cast(list[bytes | None], metas), charges, strict=True):
            if meta is not None and charge is not None:
                rows.append((OrderMeta.from_json(meta), charge))
        return rows
