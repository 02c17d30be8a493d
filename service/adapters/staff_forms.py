"""Redis records of the one-time nonces that staff forms carry, so a form is acted on at most once.

    cv:{<agency>}:staff-form:<nonce>   hash   staff, purpose, target, state (issued|started|done), result

A form that changes money (a new order, a refund, a void) is rendered with a
fresh nonce in a hidden field, bound to the account, the purpose and the
object it is about.  Submitting it *claims* the nonce in one script: only
the first submission gets ``claimed``; a double click or a reload finds
``started`` or ``done`` with the result (the charge id) and is shown that
instead of acting again.  A nonce that was never issued, or was issued to
someone else or for another object, is refused (a tampered hidden field).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Final

import redis.asyncio as redis

from service.adapters.redis_base import redis_errors, text_of

NONCE_PATTERN: Final = re.compile(r"^[A-Za-z0-9_-]{32}$")
FORM_TTL_SECONDS: Final = 12 * 3600

_CLAIM_LUA = """
-- KEYS: record.  ARGV: staff id, purpose, target, result.
local rec = redis.call('HMGET', KEYS[1], 'staff', 'purpose', 'target', 'state', 'result')
if not rec[1] then return {'unknown', ''} end
if rec[1] ~= ARGV[1] or rec[2] ~= ARGV[2] or rec[3] ~= ARGV[3] then return {'mismatch', ''} end
if rec[4] ~= 'issued' then return {rec[4], rec[5] or ''} end
redis.call('HSET', KEYS[1], 'state', 'started', 'result', ARGV[4])
return {'claimed', ARGV[4]}
"""

_RELEASE_LUA = """
-- KEYS: record.  Back to issued when it was started (the action failed before changing anything).
if redis.call('HGET', KEYS[1], 'state') == 'started' then
  redis.call('HSET', KEYS[1], 'state', 'issued', 'result', '')
end
return 1
"""


def form_key(agency_id: str, nonce: str) -> str:
    return f"cv:{{{agency_id}}}:staff-form:{nonce}"


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Claim:
    state: str  # claimed | started | done | unknown | mismatch
    result: str = ""


class FormNonces:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._claim = client.register_script(_CLAIM_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    async def issue(self, agency_id: str, staff_id: str, purpose: str, target: str) -> str:
        nonce = new_nonce()
        key = form_key(agency_id, nonce)
        with redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(
                    key,
                    mapping={"staff": staff_id, "purpose": purpose, "target": target, "state": "issued", "result": ""},
                )
                pipe.expire(key, FORM_TTL_SECONDS)
                await pipe.execute()
        return nonce

    async def claim(self, agency_id: str, nonce: str, staff_id: str, purpose: str, target: str, result: str) -> Claim:
        if not NONCE_PATTERN.match(nonce):
            return Claim("unknown")
        with redis_errors():
            state, found = await self._claim(
                keys=[form_key(agency_id, nonce)], args=[staff_id, purpose, target, result]
            )
        return Claim(text_of(state), text_of(found))

    async def release(self, agency_id: str, nonce: str) -> None:
        with redis_errors():
            await self._release(keys=[form_key(agency_id, nonce)])

    async def finish(self, agency_id: str, nonce: str) -> None:
        with redis_errors():
            await self.redis.hset(form_key(agency_id, nonce), "state", "done")
