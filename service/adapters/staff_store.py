"""Redis records of staff accounts: the account hash, the username index, enrollment links, lockout counters.

    cv:staff:usernames                     hash    username -> "<agency id> <staff id>"  (usernames are global)
    cv:staff-enroll:<sha256 of the token>  string  "<agency id> <staff id>", expires with the link (24 h)
    cv:{<agency>}:staff:<staff id>         hash    StaffMember.to_fields(): role, status, argon2id hash,
                                                   sealed TOTP secret, last used TOTP counter, lockout
    cv:{<agency>}:staff-ids                set     the agency's staff ids

On a Redis Cluster the username index and the agency's records are on
different slots, so creating an account claims the name first and releases
it if the records cannot be written.

Counting failures and taking a TOTP counter are scripts, so two requests at
once can neither both slip under the lockout nor both use the same code.
The enrollment token itself is never stored, only its hash.
"""

from __future__ import annotations

import hashlib
from typing import cast

import redis.asyncio as redis

from service.adapters.redis_base import is_cluster, redis_errors, text_of
from service.domain.staff import StaffMember

USERNAMES_KEY = "cv:staff:usernames"

_CREATE_LUA = """
-- KEYS: usernames index, staff hash, staff ids set.  ARGV: username, "<agency> <id>", staff id, field/value pairs...
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('SADD', KEYS[3], ARGV[3])
return 1
"""

_CREATE_RECORDS_LUA = """
-- KEYS: staff hash, staff ids set.  ARGV: staff id, field/value pairs...  (the username is claimed already)
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

_FAIL_LUA = """
-- KEYS: staff hash.  ARGV: max attempts, lock until (unix s).  Returns {attempts, locked now 1|0}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
local attempts = redis.call('HINCRBY', KEYS[1], 'failed_attempts', 1)
if attempts >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'locked_until', ARGV[2], 'failed_attempts', 0)
  return {attempts, 1}
end
return {attempts, 0}
"""

_TAKE_COUNTER_LUA = """
-- KEYS: staff hash.  ARGV: counter.  1 when the counter is newer than the last one used (and is now taken).
local last = tonumber(redis.call('HGET', KEYS[1], 'last_totp_counter') or '-1')
if tonumber(ARGV[1]) <= last then return 0 end
redis.call('HSET', KEYS[1], 'last_totp_counter', ARGV[1], 'failed_attempts', 0)
return 1
"""

_TAKE_ENROLLMENT_LUA = """
-- KEYS: enrollment key.  Returns its value and deletes it (a link works once).
local value = redis.call('GET', KEYS[1])
if value then redis.call('DEL', KEYS[1]) end
return value
"""


def staff_key(agency_id: str, staff_id: str) -> str:
    return f"cv:{{{agency_id}}}:staff:{staff_id}"


def staff_ids_key(agency_id: str) -> str:
    return f"cv:{{{agency_id}}}:staff-ids"


def enrollment_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def enrollment_key(token: str) -> str:
    return "cv:staff-enroll:" + enrollment_hash(token)


def _flat(member: StaffMember) -> list[str | bytes | int]:
    flat: list[str | bytes | int] = []
    for name, value in member.to_fields().items():
        flat += [name, value]
    return flat


class StaffStore:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._create = client.register_script(_CREATE_LUA)
        self._create_records = client.register_script(_CREATE_RECORDS_LUA)
        self._on_cluster = is_cluster(client)
        self._fail = client.register_script(_FAIL_LUA)
        self._take_counter = client.register_script(_TAKE_COUNTER_LUA)
        self._take_enrollment = client.register_script(_TAKE_ENROLLMENT_LUA)

    async def create(self, member: StaffMember) -> bool:
        """Store a new account; False when the username is taken (anywhere)."""
        if self._on_cluster:
            return await self._create_on_cluster(member)
        with redis_errors():
            created = await self._create(
                keys=[USERNAMES_KEY, staff_key(member.agency_id, member.id), staff_ids_key(member.agency_id)],
                args=[member.username, f"{member.agency_id} {member.id}", member.id, *_flat(member)],
            )
        return bool(created)

    async def _create_on_cluster(self, member: StaffMember) -> bool:
        """The username index and the agency's records are on different slots: claim the name, then write."""
        with redis_errors():
            if not await self.redis.hsetnx(USERNAMES_KEY, member.username, f"{member.agency_id} {member.id}"):
                return False
            try:
                await self._create_records(
                    keys=[staff_key(member.agency_id, member.id), staff_ids_key(member.agency_id)],
                    args=[member.id, *_flat(member)],
                )
            except BaseException:
                await self.redis.hdel(USERNAMES_KEY, member.username)  # nobody may be left holding the name
                raise
        return True

    async def get(self, agency_id: str, staff_id: str) -> StaffMember | None:
        with redis_errors():
            raw = cast(dict[bytes, bytes], await self.redis.hgetall(staff_key(agency_id, staff_id)))
        return StaffMember.from_fields(raw) if raw else None

    async def locate(self, username: str) -> tuple[str, str] | None:
        """(agency id, staff id) of a username."""
        with redis_errors():
            found = cast(bytes | None, await self.redis.hget(USERNAMES_KEY, username))
        if found is None:
            return None
        agency_id, staff_id = text_of(found).split(" ", 1)
        return agency_id, staff_id

    async def by_username(self, username: str) -> StaffMember | None:
        located = await self.locate(username)
        return None if located is None else await self.get(*located)

    async def list(self, agency_id: str) -> list[StaffMember]:
        with redis_errors():
            ids = sorted(text_of(i) for i in cast(set[bytes], await self.redis.smembers(staff_ids_key(agency_id))))
            async with self.redis.pipeline(transaction=False) as pipe:
                for staff_id in ids:
                    pipe.hgetall(staff_key(agency_id, staff_id))
                rows = await pipe.execute()
        return [StaffMember.from_fields(cast(dict[bytes, bytes], r)) for r in rows if r]

    async def update(self, member: StaffMember, *fields: str) -> None:
        """Write the named fields of ``member`` (all of them when none are named)."""
        values = member.to_fields()
        chosen = {k: v for k, v in values.items() if not fields or k in fields}
        with redis_errors():
            await self.redis.hset(staff_key(member.agency_id, member.id), mapping=chosen)  # type: ignore[arg-type]

    async def record_failure(self, member: StaffMember, max_attempts: int, lock_until: int) -> tuple[int, bool]:
        """Count a failed sign-in; at ``max_attempts`` the account locks. (attempts, locked by this one)."""
        with redis_errors():
            attempts, locked = await self._fail(
                keys=[staff_key(member.agency_id, member.id)], args=[max_attempts, lock_until]
            )
        return int(attempts), bool(locked)

    async def take_totp_counter(self, member: StaffMember, counter: int) -> bool:
        """Use a TOTP time step; False when it (or a later one) was used already: a replayed code."""
        with redis_errors():
            return bool(await self._take_counter(keys=[staff_key(member.agency_id, member.id)], args=[counter]))

    async def set_enrollment(self, token: str, member: StaffMember, ttl: int) -> None:
        with redis_errors():
            await self.redis.set(enrollment_key(token), f"{member.agency_id} {member.id}", ex=ttl)

    async def peek_enrollment(self, token: str) -> tuple[str, str] | None:
        with redis_errors():
            found = cast(bytes | None, await self.redis.get(enrollment_key(token)))
        if found is None:
            return None
        agency_id, staff_id = text_of(found).split(" ", 1)
        return agency_id, staff_id

    async def take_enrollment(self, token: str) -> bool:
        with redis_errors():
            return bool(await self._take_enrollment(keys=[enrollment_key(token)]))
