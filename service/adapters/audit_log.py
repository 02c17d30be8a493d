"""The audit trail in Redis: one append-only stream per agency.

    cv:{<agency>}:audit     stream   AuditRecord.to_fields() per entry (XADD, never trimmed)
    cv:audit:system         stream   events that belong to no agency (a sign-in with an unknown username)

Entries are only ever added (XADD with an id Redis assigns, so order is the
order they were written); nothing in the service calls XDEL, XTRIM or
DEL on these keys.  Reading is newest first, a bounded number at a time.
"""

from __future__ import annotations

from typing import cast

import redis.asyncio as redis

from service.adapters.redis_base import redis_errors, text_of
from service.domain.audit import AuditRecord

SYSTEM_STREAM = "cv:audit:system"
READ_LIMIT = 5000


def audit_key(agency_id: str) -> str:
    return f"cv:{{{agency_id}}}:audit" if agency_id else SYSTEM_STREAM


class AuditLog:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    async def append(self, record: AuditRecord) -> str:
        with redis_errors():
            entry_id = await self.redis.xadd(audit_key(record.agency), record.to_fields())  # type: ignore[arg-type]
        return text_of(entry_id)

    async def newest(self, agency_id: str, limit: int = READ_LIMIT) -> list[AuditRecord]:
        """Up to ``limit`` records, newest first."""
        with redis_errors():
            entries = await self.redis.xrevrange(audit_key(agency_id), count=limit)
        records = []
        for entry_id, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], entries):
            records.append(
                AuditRecord.from_fields(text_of(entry_id), {text_of(k): text_of(v) for k, v in fields.items()})
            )
        return records
