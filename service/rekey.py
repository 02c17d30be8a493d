"""Key rotation follow-through: re-encrypt stored data under the newest keys.

``keys rotate`` only adds a data-key version; this module moves what is
already stored.  For one agency it re-wraps the agency's keys under the
current master key, then walks its token and CVC ciphertexts and re-seals each
one still under an older version, with a compare-and-swap that keeps the TTL
so a concurrent delete or rewrite always wins.  Progress (the scan position,
tagged with the data-key version the pass moves data to) is saved after every
batch, so an interrupted run resumes where it stopped; a pass toward an older
version (a rotation happened since) starts over, because what it skipped is
not on the newest version.  Running it twice is harmless.

Retiring (deleting) an old data-key version waits until every server has
stopped writing it: a server keeps an agency's keys for ``auth.cache_seconds``
after they change, so a version retired sooner could be named by a ciphertext
written a moment later, which would then be unreadable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from service.adapters import crypto
from service.adapters.keyring import AgencyKeys, Keyring
from service.adapters.store import AgencyRow, VaultStore
from service.agencies import data_key_rotated_key
from service.errors import DecryptionFailed

Progress = Callable[[int], None]


def cursor_key(agency_id: str) -> str:
    return f"cv:{{{agency_id}}}:rewrap-cursor"


def cursor_value(version: int, position: str) -> str:
    """What is saved after a batch: the target version and the scan position to continue from."""
    return f"v{version}:{position}"


def saved_cursor(saved: bytes | None, version: int) -> str:
    """Where to resume a pass toward ``version``: "" (the start) unless the saved pass had that target."""
    if not saved:
        return ""
    target, _, position = saved.decode("ascii", "replace").partition(":")
    if target != f"v{version}":
        return ""
    return position


@dataclass
class RewrapReport:
    agency: str
    scanned: int = 0
    rewrapped: int = 0
    unreadable: int = 0
    keys_rewrapped: int = 0
    retired_versions: list[int] = field(default_factory=list)
    old_versions_left: set[int] = field(default_factory=set)
    #: Seconds until old versions may be retired (servers may still write them); 0 when not deferred.
    retire_deferred_seconds: int = 0


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
    cursor = saved_cursor(saved, keys.current_version)
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
        await store.set_raw(cursor_key(agency_id), cursor_value(keys.current_version, next_cursor))
        if progress is not None:
            progress(len(names))
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


async def retire_old_versions(
    store: VaultStore,
    keyring: Keyring,
    row: AgencyRow,
    report: RewrapReport,
    *,
    settle_seconds: float = 0.0,
    now: float | None = None,
) -> None:
    """Delete data-key versions nothing uses any more (crypto-shredding old keys).

    Nothing is retired within ``settle_seconds`` (the servers' ``auth.cache_seconds``)
    of the current version becoming current: servers may still be writing an old one.
    """
    keys = keyring.agency_keys(row.agency.id, row.keys)
    wait = await _seconds_until_settled(store, row, settle_seconds, time.time() if now is None else now)
    if wait > 0:
        report.retire_deferred_seconds = wait
        report.old_versions_left = {v for v in row.keys.data_keys if v != row.keys.current_version}
        return
    in_use = await old_versions_in_use(store, keys, row.agency.id)
    report.old_versions_left = in_use
    retire = [v for v in row.keys.data_keys if v != row.keys.current_version and v not in in_use]
    await store.retire_data_keys(row.agency.id, retire)
    report.retired_versions = sorted(retire)


async def _seconds_until_settled(store: VaultStore, row: AgencyRow, settle_seconds: float, now: float) -> int:
    saved = await store.get_raw(data_key_rotated_key(row.agency.id))
    version, _, since = (saved or b"").decode("ascii", "replace").partition(":")
    try:
        rotated_at = float(since)
    except ValueError:
        return 0  # rotated before this was recorded: nothing to wait for
    if version != str(row.keys.current_version):
        return 0
    return max(0, math.ceil(rotated_at + settle_seconds - now))
