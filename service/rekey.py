"""Key rotation follow-through: re-encrypt stored data under the newest keys.

``keys rotate`` only adds a data-key version; this module moves what is
already stored.  For one agency it re-wraps the agency's keys under the
current master key, then walks its token and CVC ciphertexts and re-seals each
one still under an older version, with a compare-and-swap that keeps the TTL
so a concurrent delete or rewrite always wins.  Progress (the SCAN cursor) is
saved after every batch, so an interrupted run resumes where it stopped;
running it twice is harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from service.adapters import crypto
from service.adapters.keyring import AgencyKeys, Keyring
from service.adapters.store import AgencyRow, VaultStore
from service.errors import DecryptionFailed

Progress = Callable[[int], None]


def cursor_key(agency_id: str) -> str:
    return f"cv:{{{agency_id}}}:rewrap-cursor"


@dataclass
class RewrapReport:
    agency: str
    scanned: int = 0
    rewrapped: int = 0
    unreadable: int = 0
    keys_rewrapped: int = 0
    retired_versions: list[int] = field(default_factory=list)
    old_versions_left: set[int] = field(default_factory=set)


async def rewrap_master(store: VaultStore, keyring: Keyring) -> bool:
    """Re-wrap the system pepper under the current master key; True if it changed."""
    current = await store.system_pepper(keyring.new_wrapped_pepper())
    new = keyring.rewrap_pepper(current)
    return new is not None and await store.replace_system_pepper(current, new)


async def count_ciphertexts(store: VaultStore, agency_id: str) -> int:
    total = 0
    async for _, keys in store.ciphertext_batches(agency_id):
        total += len(keys)
    return total


def _reseal(keys: AgencyKeys, redis_key: bytes, blob: bytes) -> bytes:
    kind, token_id = redis_key.decode().rsplit(":", 2)[-2:]
    if kind == "tok":
        return keys.seal_card(token_id, keys.open_card(token_id, blob))
    return keys.seal_cvc(token_id, keys.open_cvc(token_id, blob))


async def rewrap_agency(
    store: VaultStore,
    keyring: Keyring,
    row: AgencyRow,
    *,
    progress: Progress | None = None,
    restart: bool = False,
) -> RewrapReport:
    """Move one agency's keys and ciphertexts to the current master key and data-key version."""
    agency_id = row.agency.id
    report = RewrapReport(agency=row.agency.slug)
    changed = keyring.rewrap_agency(agency_id, row.keys)
    if changed:
        await store.set_agency_fields(agency_id, changed)
        report.keys_rewrapped = len(changed)
    keys = keyring.agency_keys(agency_id, row.keys)
    saved = None if restart else await store.get_raw(cursor_key(agency_id))
    cursor = int(saved) if saved else 0
    async for next_cursor, names in store.ciphertext_batches(agency_id, cursor):
        for name, blob in zip(names, await store.values(names), strict=True):
            report.scanned += 1
            if blob is None:
                continue
            try:
                version = crypto.blob_version(blob)
                if version == keys.current_version:
                    continue
                if await store.compare_and_swap(name, blob, _reseal(keys, name, blob)):
                    report.rewrapped += 1
            except DecryptionFailed:
                report.unreadable += 1
        if progress is not None:
            progress(len(names))
        await store.set_raw(cursor_key(agency_id), str(next_cursor))
    await store.delete_raw(cursor_key(agency_id))
    return report


async def old_versions_in_use(store: VaultStore, keys: AgencyKeys, agency_id: str) -> set[int]:
    """Data-key versions other than the current one that some ciphertext still names."""
    found: set[int] = set()
    async for _, names in store.ciphertext_batches(agency_id):
        for blob in await store.values(names):
            if blob is not None:
                try:
                    version = crypto.blob_version(blob)
                except DecryptionFailed:
                    continue
                if version != keys.current_version:
                    found.add(version)
    return found


async def retire_old_versions(store: VaultStore, keyring: Keyring, row: AgencyRow, report: RewrapReport) -> None:
    """Delete data-key versions nothing uses any more (crypto-shredding old keys)."""
    keys = keyring.agency_keys(row.agency.id, row.keys)
    in_use = await old_versions_in_use(store, keys, row.agency.id)
    report.old_versions_left = in_use
    retire = [v for v in row.keys.data_keys if v != row.keys.current_version and v not in in_use]
    await store.retire_data_keys(row.agency.id, retire)
    report.retired_versions = sorted(retire)
