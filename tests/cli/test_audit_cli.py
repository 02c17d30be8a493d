"""`cardvault audit verify | export | maintain` in process against the session's Redis, and the operator's own
changes (agency, keys, processing) landing in the audit log."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from click.testing import CliRunner

from service.adapters.audit_log import AuditLog, stream_key
from service.adapters.keyring import Keyring, MasterKeys
from service.adapters.store import VaultStore
from service.agencies import AgencyService
from service.audit import Actor, Auditor
from service.cli import cli
from service.domain.audit import Outcome
from tests.conftest import master_key_text
from tests.support.redis_server import RedisServer

Run = Callable[..., tuple[int, str]]


@pytest.fixture
def run(redis_server: RedisServer, master_keys: MasterKeys, tmp_path: Path) -> Run:
    env = {
        "CARDVAULT_REDIS_URL": redis_server.url,
        "CARDVAULT_MASTER_KEY": master_key_text(master_keys),
        "CARDVAULT_DATA_DIR": str(tmp_path / "var"),
    }

    def invoke(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
        return result.exit_code, result.output

    return invoke


def new_agency(run: Run) -> tuple[str, str, dict[str, str]]:
    slug = f"cli-audit-{os.getpid()}-{os.urandom(3).hex()}"
    code, out = run("agency", "create", slug, "--origin", "https://shop.example.gov")
    assert code == 0, out
    created = json.loads(out)
    return slug, created["agency"]["id"], created


async def quiet_agency(server: RedisServer, master: MasterKeys) -> tuple[str, str]:
    """An agency created through the use case alone, so its audit chain starts empty."""
    client = aioredis.Redis(port=server.port)
    try:
        keyring = Keyring(master)
        store = VaultStore(client)
        keyring.load_pepper(await store.system_pepper(keyring.new_wrapped_pepper()))
        slug = f"cli-quiet-{os.getpid()}-{os.urandom(3).hex()}"
        agency, _ = await AgencyService(store, keyring, time.time, cache_seconds=0).create(slug, [])
        return slug, agency.id
    finally:
        await client.aclose()


def stream(server: RedisServer, chain: str) -> list[dict[str, str]]:
    entries = server.client().xrange(stream_key(chain))
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def record_at(server: RedisServer, master: MasterKeys, chain: str, at: float, **what: str) -> None:
    """Write a record as the service would, at a time of the test's choosing."""
    client = aioredis.Redis(port=server.port)
    try:
        keyring = Keyring(master)
        keyring.load_pepper(await VaultStore(client).system_pepper(keyring.new_wrapped_pepper()))
        auditor = Auditor(AuditLog(client, keyring), lambda: at)
        await auditor.record(
            Actor.anonymous("192.0.2.1", chain), what.get("action", "order.create"), Outcome.SUCCESS,
            what.get("obj", "-"), what.get("detail", ""),
        )  # fmt: skip
    finally:
        await client.aclose()


class TestOperatorChanges:
    def test_agency_and_key_commands_are_recorded_as_the_operator(self, run: Run, redis_server: RedisServer) -> None:
        """create, set-origins, disable, enable, rotate-keys, set-limits and keys rotate each leave a success
        record in the agency's chain, naming the OS account and host, and never a key."""
        slug, agency_id, created = new_agency(run)
        for args in (
            ("agency", "set-origins", slug, "--origin", "https://new.example.gov"),
            ("agency", "disable", slug),
            ("agency", "enable", slug),
            ("agency", "rotate-keys", slug),
            ("agency", "set-limits", slug, "--max-amount", "5000"),
            ("keys", "rotate", "--agency", slug),
        ):
            code, out = run(*args)
            assert code == 0, out
        records = stream(redis_server, agency_id)
        assert [(r["action"], r["outcome"]) for r in records] == [
            ("agency.create", "success"),
            ("agency.origins", "success"),
            ("agency.status", "success"),
            ("agency.status", "success"),
            ("agency.api_keys", "success"),
            ("agency.limits", "success"),
            ("keys.rotate", "success"),
        ]
        assert records[1]["detail"] == "origins https://new.example.gov"
        assert records[6]["detail"] == "data key version 2 is now current"
        assert {r["actor"] for r in records} == {"operator"}
        assert all(r["actor_id"].startswith("os:") and r["source"].startswith("cli@") for r in records)
        everything = json.dumps(records)
        assert created["secret_key"] not in everything
        assert created["publishable_key"] not in everything
        assert "sk_" not in everything

    def test_a_refused_command_is_recorded_in_the_system_chain(self, run: Run, redis_server: RedisServer) -> None:
        missing = f"no-such-{os.urandom(3).hex()}"
        code, out = run("agency", "disable", missing)
        assert code == 1
        assert "no agency" in out
        system = stream(redis_server, "system")
        assert any(r["action"] == "agency.status" and r["outcome"] == "refused" and missing in r["detail"]
                   for r in system)  # fmt: skip


class TestVerify:
    def test_ok_then_a_deleted_entry_exits_1_and_names_it(self, run: Run, redis_server: RedisServer) -> None:
        slug, agency_id, _ = new_agency(run)
        run("agency", "disable", slug)
        run("agency", "enable", slug)
        code, out = run("audit", "verify", "--agency", slug)
        assert code == 0, out
        assert f"{slug} ({agency_id})" in out
        assert " OK " in out
        entries = redis_server.client().xrange(stream_key(agency_id))
        redis_server.client().xdel(stream_key(agency_id), entries[1][0])
        code, out = run("audit", "verify", "--agency", slug)
        assert code == 1
        assert "BROKEN" in out
        assert f"removed    seq 2 is missing (between entries {entries[0][0].decode()}" in out
        code, out = run("audit", "verify", "--agency", slug, "--json")
        assert json.loads(out)["chains"][0]["problems"][0]["kind"] == "removed"

    def test_verify_all_covers_every_chain(
        self, fresh_redis: RedisServer, master_keys: MasterKeys, tmp_path: Path
    ) -> None:
        env = {"CARDVAULT_REDIS_URL": fresh_redis.url, "CARDVAULT_MASTER_KEY": master_key_text(master_keys),
               "CARDVAULT_DATA_DIR": str(tmp_path / "var")}  # fmt: skip

        def fresh(*args: str) -> tuple[int, str]:
            result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
            return result.exit_code, result.output

        new_agency(fresh)
        new_agency(fresh)
        code, out = fresh("audit", "verify", "--json")
        assert code == 0, out
        chains = json.loads(out)["chains"]
        assert len(chains) == 3  # the system chain and both agencies
        assert all(c["ok"] for c in chains)


class TestExport:
    def test_jsonl_verifies_offline_and_an_edited_line_is_found(
        self, run: Run, redis_server: RedisServer, master_keys: MasterKeys, tmp_path: Path
    ) -> None:
        slug, agency_id, _ = new_agency(run)
        for n in range(3):
            asyncio.run(record_at(redis_server, master_keys, agency_id, time.time(), obj=f"ch_{n}"))
        target = tmp_path / "audit.jsonl"
        code, out = run("audit", "export", "--since", "2020-01-01", "--agency", slug, "--output", str(target))
        assert code == 0, out
        assert (target.stat().st_mode & 0o777) == 0o600
        lines = target.read_text().splitlines()
        assert [json.loads(line)["action"] for line in lines] == ["agency.create", *["order.create"] * 3]
        assert {"chain", "entry", "seq", "prev", "hash"} <= set(json.loads(lines[0]))
        code, out = run("audit", "verify", "--file", str(target))
        assert code == 0, out
        edited = json.loads(lines[2])
        edited["outcome"] = "refused"
        lines[2] = json.dumps(edited)
        target.write_text("\n".join(lines) + "\n")
        code, out = run("audit", "verify", "--file", str(target))
        assert code == 1
        assert "edited" in out
        exported = stream(redis_server, agency_id)[-1]
        assert exported["action"] == "audit.export"
        assert exported["detail"].startswith("4 records from 2020-01-01")

    def test_csv_is_formula_safe_and_filtered_by_date(
        self, run: Run, redis_server: RedisServer, master_keys: MasterKeys, tmp_path: Path
    ) -> None:
        slug, agency_id, _ = new_agency(run)
        asyncio.run(record_at(redis_server, master_keys, agency_id, 1_700_000_000.0, detail="old"))
        asyncio.run(record_at(redis_server, master_keys, agency_id, time.time(), detail='=HYPERLINK("http://x")'))
        target = tmp_path / "audit.csv"
        code, out = run("audit", "export", "--since", "2024-01-01", "--agency", slug, "--format", "csv",
                        "--output", str(target))  # fmt: skip
        assert code == 0, out
        rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
        details = [r["detail"] for r in rows]
        assert "old" not in details
        assert '\'=HYPERLINK("http://x")' in details
        assert {"chain", "entry", "when_utc", "seq", "prev", "hash"} <= set(rows[0])


class TestMaintain:
    def test_maintain_archives_drops_and_verifies(
        self, run: Run, redis_server: RedisServer, master_keys: MasterKeys
    ) -> None:
        """Records 400, 200 and 10 days old (an agency made without the CLI, so they come first): the first
        is archived then dropped, the second archived, the third stays queryable; verify reports the cut."""
        slug, agency_id = asyncio.run(quiet_agency(redis_server, master_keys))
        now = time.time()
        for days in (400, 200, 10):
            asyncio.run(record_at(redis_server, master_keys, agency_id, now - days * 86400, obj=f"d{days}"))
        before = [
            (k, {f: v for f, v in e.items() if f in (b"at", b"object", b"seq")})
            for k, e in redis_server.client().xrange(stream_key(agency_id))
        ]
        code, out = run("audit", "maintain", "--agency", slug)
        assert code == 0, out
        from service.adapters.audit_log import archive_key
        from service.domain.audit_archive import decode_segment

        dump = {
            k.decode(): [(e.entry_id, e.fields["object"], e.fields["at"]) for e in decode_segment(v)]
            for k, v in redis_server.client().hgetall(archive_key(agency_id)).items()
        }
        assert f"{slug} ({agency_id}): archived 2 in 2 segments, dropped 1" in out, (now, before, dump)
        assert f"{slug} ({agency_id}): archived 2 in 2 segments, dropped 1" in out
        hot = [r["object"] for r in stream(redis_server, agency_id)]
        assert "d10" in hot
        assert "d200" not in hot
        code, out = run("audit", "verify", "--agency", slug)
        assert code == 0, out
        assert "1 dropped by retention" in out
