"""Redis records of staff browser sessions (a small store of our own rather than aiohttp-session's).

    cv:staff-signin:<sha256 of secret>                  string  SignIn JSON, expires after 15 minutes
    cv:{<agency>}:staff-session:<sha256 of secret>      string  StaffSession JSON, expires when idle
    cv:{<agency>}:staff-sessions:<staff id>             set     the account's session hashes (to end them all)

Why not ``aiohttp_session.redis_storage.RedisStorage``: it names keys
``<cookie name>_<session id>`` (the bearer id itself as a Redis key, outside
our ``cv:{agency}`` layout), checks ``max_age`` against ``time.time()`` so the
idle and absolute timeouts could not follow the service's injectable clock,
leaves the old record readable when a new session is started (a login would
not retire the pre-login id), and writes an empty record on invalidate
instead of deleting it.  Each of those is a requirement here, and the store
is forty lines.
"""

from __future__ import annotations

from typing import cast

import redis.asyncio as redis

from service.adapters.redis_base import redis_errors, text_of
from service.domain.staff_sessions import SIGN_IN_SECONDS, SignIn, StaffSession

_GRACE_SECONDS = 60  # Redis drops an idle record a little after the service stops honouring it


def sign_in_key(secret_hash: str) -> str:
    return f"cv:staff-signin:{secret_hash}"


def session_key(agency_id: str, secret_hash: str) -> str:
    return f"cv:{{{agency_id}}}:staff-session:{secret_hash}"


def sessions_of_key(agency_id: str, staff_id: str) -> str:
    return f"cv:{{{agency_id}}}:staff-sessions:{staff_id}"


class StaffSessionStore:
    def __init__(self, client: redis.Redis, *, idle_seconds: int, absolute_seconds: int) -> None:
        self.redis = client
        self.idle_seconds = idle_seconds
        self.absolute_seconds = absolute_seconds

    # -- sign-in sessions ---------------------------------------------------------
    async def put_sign_in(self, secret_hash: str, sign_in: SignIn) -> None:
        with redis_errors():
            await self.redis.set(sign_in_key(secret_hash), sign_in.to_json(), ex=SIGN_IN_SECONDS + _GRACE_SECONDS)

    async def get_sign_in(self, secret_hash: str) -> SignIn | None:
        with redis_errors():
            raw = cast(bytes | None, await self.redis.get(sign_in_key(secret_hash)))
        return None if raw is None else SignIn.from_json(raw)

    async def delete_sign_in(self, secret_hash: str) -> None:
        with redis_errors():
            await self.redis.delete(sign_in_key(secret_hash))

    # -- staff sessions -----------------------------------------------------------------
    async def put(self, session: StaffSession) -> None:
        """Create or refresh a session (one round trip)."""
        with redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(
                    session_key(session.agency_id, session.secret_hash),
                    session.to_json(),
                    ex=self.idle_seconds + _GRACE_SECONDS,
                )
                index = sessions_of_key(session.agency_id, session.staff_id)
                pipe.sadd(index, session.secret_hash)
                pipe.expire(index, self.absolute_seconds + _GRACE_SECONDS)
                await pipe.execute()

    async def get(self, agency_id: str, secret_hash: str) -> StaffSession | None:
        with redis_errors():
            raw = cast(bytes | None, await self.redis.get(session_key(agency_id, secret_hash)))
        return None if raw is None else StaffSession.from_json(raw, secret_hash)

    async def delete(self, session: StaffSession) -> None:
        with redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(session_key(session.agency_id, session.secret_hash))
                pipe.srem(sessions_of_key(session.agency_id, session.staff_id), session.secret_hash)
                await pipe.execute()

    async def delete_all_of(self, agency_id: str, staff_id: str) -> int:
        """End every session of an account (disable, reset); returns how many there were."""
        index = sessions_of_key(agency_id, staff_id)
        with redis_errors():
            hashes = [text_of(h) for h in cast(set[bytes], await self.redis.smembers(index))]
            await self.redis.delete(*(session_key(agency_id, h) for h in hashes), index)
        return len(hashes)
