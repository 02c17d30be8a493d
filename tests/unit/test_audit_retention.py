"""Audit retention against a real redis-server, with explicit dates: records past queryable_days move to the
archive and still verify, records past retention_days are dropped behind a signed anchor, and tampering
with the archive is found."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio as redis

from service.adapters.audit_log import AuditLog, archive_key, stream_key
from service.adapters.keyring import Keyring, MasterKeys
from service.adapters.store import VaultStore
from service.audit import Actor, Auditor
from service.audit_chains import chain_records, verify_chain
from service.audit_retention import AuditMaintenance
from service.domain.audit import Action, Outcome
from service.domain.audit_archive import DAY_SECONDS, decode_segment, encode_segment
from service.domain.audit_chain import ChainEntry
from service.domain.audit_verify import ProblemKind
from service.settings import AuditSettings
from tests.support import leaks
from tests.support.cards import VISA
from tests.support.redis_server import RedisServer

DAY0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
SETTINGS = AuditSettings(queryable_days=90, retention_days=365)


class Clock:
    def __init__(self) -> None:
        self.now = DAY0

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    client: redis.Redis
    auditor: Auditor
    clock: Clock
    chain: str

    @property
    def log(self) -> AuditLog:
        return self.auditor.log

    async def write_days(self, days: range) -> None:
        """One record at noon of each day (days counted from 2026-01-01)."""
        for day in days:
            self.clock.now = DAY0 + day * DAY_SECONDS + 43200
            await self.auditor.record(Actor.anonymous("-", self.chain), "order.create", Outcome.SUCCESS, f"ch_{day}")

    def maintenance(self) -> AuditMaintenance:
        return AuditMaintenance(self.auditor, SETTINGS, Actor.operator(""))

    async def run(self, day: int) -> None:
        self.clock.now = DAY0 + day * DAY_SECONDS
        await self.maintenance().run(self.clock.now, [self.chain])


@pytest.fixture
async def setup(redis_server: RedisServer, master_keys: MasterKeys) -> AsyncIterator[Setup]:
    client = redis.Redis(port=redis_server.port)
    keyring = Keyring(master_keys)
    keyring.load_pepper(await VaultStore(client).system_pepper(keyring.new_wrapped_pepper()))
    clock = Clock()
    yield Setup(client, Auditor(AuditLog(client, keyring), clock), clock, "agy_" + secrets.token_hex(8))
    await client.aclose()


async def hot_objects(setup: Setup) -> list[str]:
    return [r.object for r in reversed(await setup.log.newest(setup.chain)) if r.action == "order.create"]


class TestArchive:
    async def test_old_records_move_to_the_archive_and_the_chain_still_verifies(self, setup: Setup) -> None:
        """Records of days 0..99, maintained on day 100: days 0..9 are archived (older than 90 days), in
        month segments; the stream keeps days 10..99; the whole chain verifies across the cut."""
        await setup.write_days(range(100))
        await setup.run(100)
        assert (await hot_objects(setup))[0] == "ch_10"
        names = await setup.log.segment_names(setup.chain)
        assert [n.split("/")[0] for n in names] == ["2026-01"]
        archived = [e.fields["object"] for e in await setup.log.segment(setup.chain, names[0])]
        assert archived == [f"ch_{d}" for d in range(10)]
        report = await verify_chain(setup.log, setup.chain)
        assert report.ok, report.problems
        assert (report.archived, report.first_seq, report.dropped) == (10, 1, 0)

    async def test_exports_reach_into_the_archive(self, setup: Setup) -> None:
        await setup.write_days(range(100))
        await setup.run(100)
        found = [
            e.fields["object"]
            async for e in chain_records(setup.log, setup.chain, DAY0 + 5 * DAY_SECONDS, DAY0 + 15 * DAY_SECONDS, print)
        ]
        assert found == [f"ch_{d}" for d in range(5, 15)]

    async def test_two_maintainers_at_once_archive_each_record_once(self, setup: Setup) -> None:
        await setup.write_days(range(60))
        setup.clock.now = DAY0 + 150 * DAY_SECONDS
        first, second = setup.maintenance(), setup.maintenance()
        await asyncio.gather(first.run(setup.clock.now, [setup.chain]), second.run(setup.clock.now, [setup.chain]))
        report = await verify_chain(setup.log, setup.chain)
        assert report.ok, report.problems
        segments = [await setup.log.segment(setup.chain, n) for n in await setup.log.segment_names(setup.chain)]
        objects = [e.fields["object"] for seg in segments for e in seg if e.fields["action"] == "order.create"]
        assert objects == [f"ch_{d}" for d in range(60)]

    async def test_an_edited_archive_segment_is_found(self, setup: Setup) -> None:
        await setup.write_days(range(40))
        await setup.run(140)
        name = (await setup.log.segment_names(setup.chain))[0]
        entries = await setup.log.segment(setup.chain, name)
        changed = [ChainEntry(e.entry_id, {**e.fields, "outcome": "refused"}) if i == 3 else e for i, e in
                   enumerate(entries)]  # fmt: skip
        await setup.client.hset(archive_key(setup.chain), name, encode_segment(changed))
        report = await verify_chain(setup.log, setup.chain)
        assert [p.kind for p in report.problems] == [ProblemKind.EDITED]

    async def test_a_deleted_archive_segment_is_found(self, setup: Setup) -> None:
        """Days 0..39 archived in two monthly segments; the January one deleted."""
        await setup.write_days(range(40))
        await setup.run(140)
        names = await setup.log.segment_names(setup.chain)
        assert len(names) == 2
        await setup.client.hdel(archive_key(setup.chain), names[0])
        report = await verify_chain(setup.log, setup.chain)
        assert ProblemKind.REMOVED in [p.kind for p in report.problems]
        assert "seq 1..31 are missing" in report.problems[0].message

    async def test_the_archive_holds_no_card_number(self, setup: Setup) -> None:
        """Archive segments are compressed, so the leak scanner cannot read them: decompress and scan."""
        setup.clock.now = DAY0
        await setup.auditor.record(Actor.anonymous("-", setup.chain), "token.delete", Outcome.REFUSED, VISA, VISA)
        await setup.run(120)
        blobs = await setup.client.hvals(archive_key(setup.chain))
        assert blobs
        for blob in blobs:
            text = "\n".join(str(e.fields) for e in decode_segment(blob))
            assert not leaks.cards_in_text(text)


class TestRetention:
    async def test_records_past_retention_are_dropped_behind_a_signed_anchor(self, setup: Setup) -> None:
        """Records of days 0..399, maintained on day 400: days 0..34 are past 365 days and dropped; verify
        passes, starts at the first kept record and reports the cut."""
        await setup.write_days(range(400))
        await setup.run(400)
        report = await verify_chain(setup.log, setup.chain)
        assert report.ok, report.problems
        assert report.dropped == 35
        assert report.first_seq == 36
        assert report.dropped_before == DAY0 + 35 * DAY_SECONDS
        kept = [
            e.fields["object"]
            async for e in chain_records(setup.log, setup.chain, DAY0, None, print)
            if e.fields["action"] == "order.create"
        ]
        assert kept[0] == "ch_35"
        assert len(kept) == 365
        actions = {r.action: r.detail for r in await setup.log.newest(setup.chain)}
        assert actions[Action.AUDIT_RETENTION].startswith("35 records older than 2026-02-05")

    async def test_a_second_run_later_moves_the_cut_and_still_verifies(self, setup: Setup) -> None:
        """Run on day 400, write ten more days, run on day 410: the cut moves by ten days, partly inside
        a month segment that is rewritten."""
        await setup.write_days(range(400))
        await setup.run(400)
        await setup.write_days(range(400, 410))
        await setup.run(410)
        report = await verify_chain(setup.log, setup.chain)
        assert report.ok, report.problems
        assert report.dropped == 45

    async def test_dropping_tampered_records_is_recorded_in_the_chain(self, setup: Setup) -> None:
        """A record deleted from the part retention drops: the evidence survives as a failure record."""
        await setup.write_days(range(100))
        await setup.run(100)  # days 0..9 archived
        name = (await setup.log.segment_names(setup.chain))[0]
        entries = await setup.log.segment(setup.chain, name)
        await setup.client.hset(archive_key(setup.chain), name, encode_segment(entries[:2] + entries[3:]))
        await setup.run(375)  # days 0..9 now past retention
        retention = [r for r in await setup.log.newest(setup.chain) if r.action == Action.AUDIT_RETENTION]
        assert retention[0].outcome == Outcome.FAILURE
        assert "seq 3 is missing" in retention[0].detail
        report = await verify_chain(setup.log, setup.chain)
        assert report.ok, report.problems  # what was wrong is gone; the record of it is not

    async def test_the_hot_stream_keeps_only_queryable_days(self, setup: Setup) -> None:
        await setup.write_days(range(200))
        await setup.run(200)
        assert await setup.client.xlen(stream_key(setup.chain)) == 90 + 1  # and the audit.archive record
