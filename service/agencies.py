"""Agency use cases: create, list, rotate, disable, shred, and authenticate API keys.

The HTTP layer calls :meth:`AgencyService.authenticate` on every request; it
answers from a short in-process cache (``auth.cache_seconds``) so the hot path
spends its one Redis round trip on the work itself.  A disabled agency or a
rotated key therefore stops working everywhere within that many seconds.

Keys replaced by ``rotate-keys --grace-hours N`` keep working until their grace
ends; the agency remembers them (``cv:{<agency>}:api-keys-grace``) so that a
rotation without grace, the answer to a leaked key, revokes them too, and a
shred removes them with the rest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from service.adapters.keyring import AgencyKeys, Keyring, WrappedAgencyKeys
from service.adapters.store import AgencyRow, VaultStore
from service.clock import Clock
from service.domain.agencies import (
    Agency,
    AgencyStatus,
    KeyKind,
    key_kind_of,
    new_agency_id,
    new_api_key,
    normalize_origin,
    validate_slug,
)
from service.errors import OperatorError

AUTH_CACHE_LIMIT = 10_000
#: (keyed hash, kind, unix time its grace ends) of keys a graceful rotation left working.
GraceKey = tuple[str, KeyKind, int]


def grace_keys_key(agency_id: str) -> str:
    return f"cv:{{{agency_id}}}:api-keys-grace"


def data_key_rotated_key(agency_id: str) -> str:
    """``"<version>:<unix time>"``: when the agency's newest data-key version became current."""
    return f"cv:{{{agency_id}}}:dk-rotated"


@dataclass(frozen=True)
class Principal:
    """Who is calling: an agency, with which kind of key, and that agency's keys."""

    agency: Agency
    kind: KeyKind
    keys: AgencyKeys

    @property
    def secret(self) -> bool:
        return self.kind is KeyKind.SECRET


@dataclass(frozen=True, repr=False)
class IssuedKeys:
    """A freshly issued key pair: shown once, then only their hashes exist."""

    publishable_key: str
    secret_key: str

    def __repr__(self) -> str:
        return "IssuedKeys(<redacted>)"


class AgencyService:
    def __init__(self, store: VaultStore, keyring: Keyring, clock: Clock, *, cache_seconds: float) -> None:
        self.store = store
        self.keyring = keyring
        self.clock = clock
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    # -- authentication (hot path) --------------------------------------------------
    async def authenticate(self, api_key: str) -> Principal | None:
        """The principal behind an API key, or None for an unknown, rotated or disabled one."""
        if key_kind_of(api_key) is None:
            return None
        key_hash = self.keyring.api_key_hash(api_key)
        now = time.monotonic()
        cached = self._cache.get(key_hash)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await self.store.resolve_api_key(key_hash)
        principal = None
        if found is not None:
            kind, row = found
            if row.agency.active and key_kind_of(api_key) is kind:
                principal = Principal(row.agency, kind, self.keys_for(row))
        if self.cache_seconds > 0:
            if len(self._cache) >= AUTH_CACHE_LIMIT:
                self._cache.clear()
            self._cache[key_hash] = (now + self.cache_seconds, principal)
        return principal

    def keys_for(self, row: AgencyRow) -> AgencyKeys:
        return self.keyring.agency_keys(row.agency.id, row.keys)

    # -- operator use cases -----------------------------------------------------------
    def _issue(self) -> tuple[IssuedKeys, list[tuple[str, KeyKind]]]:
        issued = IssuedKeys(new_api_key(KeyKind.PUBLISHABLE), new_api_key(KeyKind.SECRET))
        hashes = [
            (self.keyring.api_key_hash(issued.publishable_key), KeyKind.PUBLISHABLE),
            (self.keyring.api_key_hash(issued.secret_key), KeyKind.SECRET),
        ]
        return issued, hashes

    async def create(self, slug: str, origins: Sequence[str]) -> tuple[Agency, IssuedKeys]:
        validate_slug(slug)
        normalized = tuple(dict.fromkeys(normalize_origin(o) for o in origins))
        agency = Agency(new_agency_id(), slug, AgencyStatus.ACTIVE, normalized, int(self.clock()))
        wrapped = WrappedAgencyKeys(
            current_version=1,
            data_keys={1: self.keyring.new_data_key(agency.id, 1)},
            fingerprint_key=self.keyring.new_fingerprint_key(agency.id),
        )
        issued, hashes = self._issue()
        if not await self.store.create_agency(agency, wrapped, hashes):
            raise OperatorError(f"agency {slug!r} already exists")
        return agency, issued

    async def row(self, slug: str) -> AgencyRow:
        agency_id = await self.store.agency_id_for_slug(slug)
        row = await self.store.agency(agency_id) if agency_id else None
        if row is None:
            raise OperatorError(f"no agency {slug!r} (see `cardvault agency list`)")
        return row

    async def list(self) -> list[Agency]:
        return sorted((row.agency for row in await self.store.agencies()), key=lambda a: a.slug)

    async def rotate_api_keys(self, slug: str, *, grace_seconds: int = 0) -> IssuedKeys:
        """A new key pair; the current pair dies now or after ``grace_seconds``.

        Without grace every older key dies now, including keys an earlier
        rotation left in their grace period: only the pair printed now works.
        """
        row = await self._live_row(slug)
        now = int(self.clock())
        in_grace = [key for key in await self._grace_keys(row.agency.id) if key[2] > now]
        issued, hashes = self._issue()
        current = list(row.api_key_hashes)
        if grace_seconds > 0:
            old = current
            remaining = [*in_grace, *((h, kind, now + grace_seconds) for h, kind in current)]
        else:
            old = [*current, *((h, kind) for h, kind, _ in in_grace)]
            remaining = []
        await self.store.replace_api_keys(row.agency.id, old, hashes, grace_seconds=grace_seconds)
        await self._save_grace_keys(row.agency.id, remaining)
        return issued

    async def _grace_keys(self, agency_id: str) -> tuple[GraceKey, ...]:
        raw = await self.store.get_raw(grace_keys_key(agency_id))
        return tuple((h, KeyKind(kind), int(until)) for h, kind, until in json.loads(raw)) if raw else ()

    async def _save_grace_keys(self, agency_id: str, keys: Sequence[GraceKey]) -> None:
        if keys:
            await self.store.set_raw(grace_keys_key(agency_id), json.dumps([[h, str(k), t] for h, k, t in keys]))
        else:
            await self.store.delete_raw(grace_keys_key(agency_id))

    async def set_status(self, slug: str, status: AgencyStatus) -> Agency:
        row = await self._live_row(slug)
        await self.store.set_agency_fields(row.agency.id, {"status": str(status)})
        return (await self.row(slug)).agency

    async def set_origins(self, slug: str, origins: Sequence[str]) -> Agency:
        row = await self._live_row(slug)
        normalized = tuple(dict.fromkeys(normalize_origin(o) for o in origins))
        await self.store.set_agency_fields(row.agency.id, {"origins": json.dumps(list(normalized))})
        return (await self.row(slug)).agency

    async def shred(self, slug: str) -> int:
        row = await self.row(slug)
        in_grace = [(h, kind) for h, kind, _ in await self._grace_keys(row.agency.id)]
        return await self.store.shred_agency(row.agency.id, [*row.api_key_hashes, *in_grace])

    async def rotate_data_key(self, slug: str) -> int:
        """Start a new data key version for new writes; returns it."""
        row = await self._live_row(slug)
        current = row.keys.current_version
        wrapped = self.keyring.new_data_key(row.agency.id, current + 1)
        if not await self.store.add_data_key(row.agency.id, current, wrapped):
            raise OperatorError(f"agency {slug!r}: its keys changed while rotating; run the command again")
        # Servers keep writing the old version while their auth cache holds the agency's keys;
        # retiring it is safe only after that (see rekey.retire_old_versions).
        await self.store.set_raw(data_key_rotated_key(row.agency.id), f"{current + 1}:{self.clock():.3f}")
        return current + 1

    async def _live_row(self, slug: str) -> AgencyRow:
        row = await self.row(slug)
        if row.agency.status is AgencyStatus.SHREDDED:
            raise OperatorError(f"agency {slug!r} has been shredded")
        return row
