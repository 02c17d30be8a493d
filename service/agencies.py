"""Agency use cases: create, list, rotate, disable, shred, and authenticate API keys.

The HTTP layer calls :meth:`AgencyService.authenticate` on every request; it
answers from a short in-process cache (``auth.cache_seconds``) so the hot path
spends its one Redis round trip on the work itself.  A disabled agency or a
rotated key therefore stops working everywhere within that many seconds.
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
        row = await self._live_row(slug)
        issued, hashes = self._issue()
        await self.store.replace_api_keys(row.agency.id, row.api_key_hashes, hashes, grace_seconds=grace_seconds)
        return issued

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
        return await self.store.shred_agency(row.agency.id, row.api_key_hashes)

    async def rotate_data_key(self, slug: str) -> int:
        """Start a new data key version for new writes; returns it."""
        row = await self._live_row(slug)
        current = row.keys.current_version
        wrapped = self.keyring.new_data_key(row.agency.id, current + 1)
        if not await self.store.add_data_key(row.agency.id, current, wrapped):
            raise OperatorError(f"agency {slug!r}: its keys changed while rotating; run the command again")
        return current + 1

    async def _live_row(self, slug: str) -> AgencyRow:
        row = await self.row(slug)
        if row.agency.status is AgencyStatus.SHREDDED:
            raise OperatorError(f"agency {slug!r} has been shredded")
        return row
