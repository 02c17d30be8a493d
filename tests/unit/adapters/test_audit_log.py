"""The hash-chained audit log in a real redis-server: ordered appends under concurrency, and tampering done
directly in Redis (XDEL, delete + re-add, truncation, forged entries, a deleted head) found by verify."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio as redis

from service import rekey
from service.adapters import crypto
from service.adapters.audit_log import AuditLog, anchor_key, head_key, stream_key
from service.adapters.keyring import Keyring, MasterKey, MasterKeys
from service.adapters.store import VaultStore
from service.agencies import AgencyService
from service.audit import Actor, Auditor
from service.audit_chains import verify_all, verify_chain
from service.domain.audit import SYSTEM_CHAIN, Action, Outcome
from service.domain.audit_chain import RELINKED, link
from service.domain.audit_verify import ChainReport, ProblemKind
from tests.support.redis_server import RedisServer

CLOCK_START = 1_800_000_000.0


@dataclass
class Vault:
    """One "process": its own connection, keyring and Auditor over the shared Redis."""

    client: redis.Redis
    keyring: Keyring
    auditor: Auditor

    @property
    def log(self) -> AuditLog:
        return self.auditor.log


async def open_vault(server: RedisServer, master: MasterKeys) -> Vault:
    client = redis.Redis(port=server.port)
    keyring = Keyring(master)
    keyring.load_pepper(await VaultStore(client).system_pepper(keyring.new_wrapped_pepper()))
    return Vault(client, keyring, Auditor(AuditLog(client, keyring), lambda: CLOCK_START))


@pytest.fixture
async def vault(redis_server: RedisServer, master_keys: MasterKeys) -> AsyncIterator[Vault]:
    opened = await open_vault(redis_server, master_keys)
    yield opened
    await opened.client.aclose()


@pytest.fixture
def chain() -> str:
    return "agy_" + secrets.token_hex(8)


async def fill(vault: Vault, chain: str, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
    for n in range(count):
        await vault.auditor.record(Actor.anonymous("192.0.2.7", chain), "order.create", Outcome.SUCCESS, f"ch_{n}")
    return await vault.client.xrange(stream_key(chain))  # type: ignore[no-any-return]


def kinds(report: ChainReport) -> list[ProblemKind]:
    return [p.kind for p in report.problems]


class TestAppending:
    async def test_concurrent_writers_in_several_processes_make_one_ordered_chain(
        self, redis_server: RedisServer, master_keys: MasterKeys, chain: str
    ) -> None:
        """Four "processes" (own connection, own Auditor) appending 50 records each at once: seq 1..200,
        in stream order, every link sound, and each record stored exactly once."""
        vaults = [await open_vault(redis_server, master_keys) for _ in range(4)]
        try:
            await asyncio.gather(
                *(
                    v.auditor.record(Actor.anonymous("-", chain), "order.create", Outcome.SUCCESS, f"ch_{i}_{n}")
                    for i, v in enumerate(vaults)
                    for n in range(50)
                )
            )
            entries = await vaults[0].client.xrange(stream_key(chain))
            assert [int(fields[b"seq"]) for _, fields in entries] == list(range(1, 201))
            assert len({fields[b"object"] for _, fields in entries}) == 200
            report = await verify_chain(vaults[0].log, chain)
            assert report.ok, report.problems
            assert report.records == 200
        finally:
            for v in vaults:
                await v.client.aclose()

    async def test_a_new_agency_chain_is_noted_in_the_system_chain(self, vault: Vault, chain: str) -> None:
        await fill(vault, chain, 1)
        starts = [r for r in await vault.log.newest("", 200) if r.action == Action.AUDIT_CHAIN_START]
        assert chain in {r.object for r in starts}


class TestTamperingInRedis:
    async def test_an_intact_chain_verifies(self, vault: Vault, chain: str) -> None:
        await fill(vault, chain, 5)
        report = await verify_chain(vault.log, chain)
        assert report.ok, report.problems
        assert (report.first_seq, report.last_seq, report.queryable) == (1, 5, 5)

    async def test_xdel_of_an_entry_is_removed(self, vault: Vault, chain: str) -> None:
        entries = await fill(vault, chain, 6)
        await vault.client.xdel(stream_key(chain), entries[2][0])
        report = await verify_chain(vault.log, chain)
        assert kinds(report) == [ProblemKind.REMOVED]
        assert report.problems[0].seq == 3

    async def test_a_field_edited_by_delete_and_re_add_is_edited(self, vault: Vault, chain: str) -> None:
        """XADD cannot edit; the edit is XDEL plus XADD of a changed copy (which lands at the end)."""
        entries = await fill(vault, chain, 6)
        entry_id, fields = entries[2]
        await vault.client.xdel(stream_key(chain), entry_id)
        await vault.client.xadd(stream_key(chain), {**fields, b"outcome": b"refused"})
        report = await verify_chain(vault.log, chain)
        assert kinds(report) == [ProblemKind.EDITED]
        assert report.problems[0].seq == 3

    async def test_truncating_the_head_is_truncated(self, vault: Vault, chain: str) -> None:
        entries = await fill(vault, chain, 6)
        await vault.client.xdel(stream_key(chain), entries[4][0], entries[5][0])
        report = await verify_chain(vault.log, chain)
        assert kinds(report) == [ProblemKind.TRUNCATED]
        assert "seq 5..6 missing at the end" in report.problems[0].message

    async def test_a_forged_entry_without_the_key_is_inserted(self, vault: Vault, chain: str) -> None:
        """An attacker who knows the format but not the key appends a plausible next record."""
        entries = await fill(vault, chain, 3)
        last = {k.decode(): v.decode() for k, v in entries[-1][1].items()}
        forged_key = crypto.random_key()
        body = {k: v for k, v in last.items() if k not in ("seq", "prev", "hash")}
        forged = link(
            chain,
            {**body, "action": "refund"},
            4,
            last["hash"],
            lambda m, *, person: crypto.keyed_hash(forged_key, m, person=person),
        )
        await vault.client.xadd(stream_key(chain), forged)  # type: ignore[arg-type]
        report = await verify_chain(vault.log, chain)
        assert kinds(report) == [ProblemKind.INSERTED]

    async def test_a_moved_entry_is_reordered(self, vault: Vault, chain: str) -> None:
        entries = await fill(vault, chain, 5)
        entry_id, fields = entries[1]
        await vault.client.xdel(stream_key(chain), entry_id)
        await vault.client.xadd(stream_key(chain), fields)  # type: ignore[arg-type]
        assert kinds(await verify_chain(vault.log, chain)) == [ProblemKind.REORDERED]

    async def test_a_deleted_head_is_reported_and_later_records_carry_the_mark(self, vault: Vault, chain: str) -> None:
        """Deleting the head (to hide a truncation) is reported; the service keeps appending, chained to
        the last record it finds, and that record says the head had vanished, so the report stays."""
        entries = await fill(vault, chain, 4)
        await vault.client.xdel(stream_key(chain), entries[-1][0])
        await vault.client.delete(head_key(chain))
        assert kinds(await verify_chain(vault.log, chain)) == [ProblemKind.HEAD]
        fresh = Auditor(AuditLog(vault.client, vault.keyring), lambda: CLOCK_START)  # no remembered head
        await fresh.record(Actor.anonymous("-", chain), "order.create", Outcome.SUCCESS, "ch_after")
        stored = await vault.client.xrevrange(stream_key(chain), count=1)
        assert stored[0][1][RELINKED.encode()] == b"head-missing"
        assert stored[0][1][b"seq"] == b"4"
        assert kinds(await verify_chain(vault.log, chain)) == [ProblemKind.HEAD]

    async def test_a_deleted_and_restarted_chain_shows_against_the_system_chain(
        self, fresh_redis: RedisServer, master_keys: MasterKeys
    ) -> None:
        """Every key of an agency's chain deleted, and new records written: the system chain noted two
        starts. A chain deleted outright is reported too."""
        vault = await open_vault(fresh_redis, master_keys)
        try:
            await fill(vault, "agy_restarted", 3)
            await fill(vault, "agy_vanished", 2)
            for doomed in ("agy_restarted", "agy_vanished"):
                await vault.client.delete(stream_key(doomed), head_key(doomed), anchor_key(doomed))
            await fill(Vault(vault.client, vault.keyring, Auditor(vault.log, lambda: CLOCK_START)), "agy_restarted", 1)
            reports = await verify_all(vault.log)
            assert reports[SYSTEM_CHAIN].ok
            assert "begun again" in reports["agy_restarted"].problems[0].message
            assert "deleted" in reports["agy_vanished"].problems[0].message
        finally:
            await vault.client.aclose()


class TestKeysAndShredding:
    async def test_chains_verify_after_data_key_rotation_and_a_new_master_key(
        self, fresh_redis: RedisServer, master_keys: MasterKeys
    ) -> None:
        """keys rotate (a new data-key version) and keys rewrap under a new master key leave every chain
        verifiable by a process that holds only the new master key."""
        vault = await open_vault(fresh_redis, master_keys)
        store = VaultStore(vault.client)
        agencies = AgencyService(store, vault.keyring, lambda: CLOCK_START, cache_seconds=0)
        agency, _ = await agencies.create("rotating", ["https://shop.example.gov"])
        await fill(vault, agency.id, 3)
        await agencies.rotate_data_key("rotating")
        new_master = MasterKey(crypto.random_key(), source="new")
        rotated = Keyring(MasterKeys(new_master, (master_keys.current,)))
        assert await rekey.rewrap_master(store, rotated)
        await vault.client.aclose()
        after = await open_vault(fresh_redis, MasterKeys(new_master))
        try:
            reports = await verify_all(after.log)
            assert all(r.ok for r in reports.values()), reports
            assert reports[agency.id].records == 3
        finally:
            await after.client.aclose()

    async def test_shredding_an_agency_keeps_its_audit_chain(self, vault: Vault) -> None:
        """Shredding destroys card data, never the audit trail (PCI DSS 10.5.1 keeps it a year)."""
        agencies = AgencyService(VaultStore(vault.client), vault.keyring, lambda: CLOCK_START, cache_seconds=0)
        slug = "shred-" + secrets.token_hex(4)
        agency, _ = await agencies.create(slug, ["https://shop.example.gov"])
        await fill(vault, agency.id, 3)
        await agencies.shred(slug)
        report = await verify_chain(vault.log, agency.id)
        assert report.ok, report.problems
        assert report.records == 3
