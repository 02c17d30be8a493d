"""`cardvault keys ...` run as real processes: data-key rotation, rewrap (resumable), retire, master keys."""

from __future__ import annotations

import asyncio
import itertools
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import yaml

from service import rekey
from service.adapters.keyring import parse_master_key
from service.adapters.redis_base import agency_key, cvc_key, token_key
from service.agencies import Principal
from service.cli.runtime import open_runtime
from service.clock import system_clock
from service.domain.agencies import KeyKind
from service.domain.cards import parse_card_number, parse_cvc
from service.settings_loader import load_settings
from service.vault import TokenizeRequest, Vault
from tests.support.cards import CVC, MASTERCARD, VISA
from tests.support.keys import agency_data_keys
from tests.support.redis_server import RedisServer
from tests.support.serve import CliResult, ServeFactory, ServeProcess, run_cli, run_cli_with_tty_stderr

pytestmark = pytest.mark.slow

_slugs = itertools.count(1)
BULK_TOKENS = 3000


def new_slug(prefix: str = "keys") -> str:
    return f"{prefix}-{os.getpid()}-{next(_slugs)}"


def header_version(blob: bytes) -> int:
    """The data-key version a ciphertext names: b"C" then a big-endian u32."""
    assert blob[:1] == b"C", blob[:1]
    version: int = struct.unpack(">I", blob[1:5])[0]
    return version


def ciphertext_versions(client: redis.Redis, agency_id: str) -> dict[bytes, int]:
    """Every token and CVC ciphertext of the agency, by Redis key, with the version its header names."""
    found: dict[bytes, int] = {}
    for kind in ("tok", "cvc"):
        names = list(agency_data_keys(client, agency_id, kind))
        blobs = cast(list[bytes | None], client.mget(names) if names else [])
        for name, blob in zip(names, blobs, strict=True):
            if blob is not None:
                found[cast(bytes, name)] = header_version(blob)
    return found


def kinds(versions: dict[bytes, int]) -> set[bytes]:
    return {name.split(b":")[-2] for name in versions}


@pytest.fixture
def serve(tmp_path: Path, leak_sources: Any) -> Iterator[ServeFactory]:
    with ServeFactory(tmp_path, leak_sources) as factory:
        yield factory


@pytest.fixture(scope="class")
def vault(tmp_path_factory: pytest.TempPathFactory, leak_sources: Any) -> Iterator[ServeProcess]:
    """A development serve on the embedded Redis that trusts no cached API-key lookup."""
    with ServeFactory(tmp_path_factory.mktemp("keys-cli"), leak_sources) as factory:
        process = factory(env={"CARDVAULT_AUTH__CACHE_SECONDS": "0", "CARDVAULT_VELOCITY__ENABLED": "false"}).start()
        yield process
        process.stop()


def cli(vault: ServeProcess, *args: str) -> CliResult:
    return run_cli(*args, "--data-dir", vault.data_dir, env=vault.env, cwd=vault.workdir)


def create_agency(vault: ServeProcess) -> tuple[str, str, str]:
    """(slug, agency id, secret key) of a new agency on the running vault."""
    slug = new_slug()
    created = cli(vault, "agency", "create", slug, "--origin", "https://shop.example.gov").assert_ok().json()
    return slug, created["agency"]["id"], created["secret_key"]


class TestKeysRotate:
    def test_rotate_starts_version_2_and_old_tokens_stay_readable(self, vault: ServeProcess) -> None:
        """After `keys rotate` new ciphertexts name version 2 and version-1 tokens still read."""
        slug, agency_id, secret = create_agency(vault)
        old = vault.create_token(secret)
        client = vault.redis()
        assert set(ciphertext_versions(client, agency_id).values()) == {1}

        rotated = cli(vault, "keys", "rotate", "--agency", slug).assert_ok()
        assert rotated.json() == {"rotated": {slug: 2}}
        assert "keys rewrap" in rotated.stderr

        new = vault.create_token(secret)
        versions = ciphertext_versions(client, agency_id)
        assert versions[token_key(agency_id, new["id"]).encode()] == 2
        assert versions[cvc_key(agency_id, new["id"]).encode()] == 2
        assert versions[token_key(agency_id, old["id"]).encode()] == 1
        client.close()
        assert vault.token_status(secret, old["id"]) == 200
        assert vault.token_status(secret, new["id"]) == 200
        status = cli(vault, "keys", "status").assert_ok().json()["agencies"][slug]
        assert status["current_version"] == 2
        assert status["versions"] == [1, 2]

    def test_rotate_without_agency_rotates_every_agency(self, vault: ServeProcess) -> None:
        """`keys rotate` alone moves every live agency one version on."""
        before = cli(vault, "keys", "status").assert_ok().json()["agencies"]
        rotated = cli(vault, "keys", "rotate").assert_ok().json()["rotated"]
        live = {slug for slug, a in before.items() if a["status"] != "shredded"}
        assert set(rotated) == live
        for slug in live:
            assert rotated[slug] == before[slug]["current_version"] + 1


class TestKeysRewrap:
    def test_rewrap_moves_every_token_and_cvc_with_a_progress_bar(self, vault: ServeProcess) -> None:
        """rewrap re-seals each token and CVC under the newest version, keeps TTLs, and shows a progress bar."""
        slug, agency_id, secret = create_agency(vault)
        tokens = [vault.create_token(secret) for _ in range(5)]
        cli(vault, "keys", "rotate", "--agency", slug).assert_ok()
        tokens.append(vault.create_token(secret))
        client = vault.redis()
        before = ciphertext_versions(client, agency_id)
        assert sorted(before.values()) == [1] * 10 + [2] * 2
        assert kinds(before) == {b"tok", b"cvc"}
        cvc_ttls = {name: client.pttl(name) for name in before if b":cvc:" in name}

        done = run_cli_with_tty_stderr(
            "keys", "rewrap", "--agency", slug, "--data-dir", vault.data_dir, env=vault.env, cwd=vault.workdir
        ).assert_ok()
        assert "100%" in done.stderr, done.stderr
        assert slug in done.stderr
        report = done.json()
        assert report["agency"] == slug
        assert report["rewrapped"] == 10
        assert report["unreadable"] == 0
        after = ciphertext_versions(client, agency_id)
        assert after.keys() == before.keys()
        assert set(after.values()) == {2}
        for name, ttl in cvc_ttls.items():
            assert 0 < client.pttl(name) <= ttl
        assert client.exists(rekey.cursor_key(agency_id)) == 0
        client.close()
        for token in tokens:
            answer = vault.request("GET", f"/v1/tokens/{token['id']}", key=secret)
            assert answer.status == 200
            assert answer.json()["card"]["fingerprint"] == token["card"]["fingerprint"]

        again = cli(vault, "keys", "rewrap", "--agency", slug).assert_ok().json()
        assert again["rewrapped"] == 0
        assert again["scanned"] == 12

    def test_rewrap_of_one_agency_leaves_the_others_alone(self, vault: ServeProcess) -> None:
        """--agency limits the pass to that agency's ciphertexts."""
        slug, agency_id, secret = create_agency(vault)
        other_slug, other_id, other_secret = create_agency(vault)
        vault.create_token(secret)
        vault.create_token(other_secret)
        cli(vault, "keys", "rotate", "--agency", slug).assert_ok()
        cli(vault, "keys", "rotate", "--agency", other_slug).assert_ok()
        cli(vault, "keys", "rewrap", "--agency", slug).assert_ok()
        client = vault.redis()
        assert set(ciphertext_versions(client, agency_id).values()) == {2}
        assert set(ciphertext_versions(client, other_id).values()) == {1}
        client.close()

    def test_retire_deletes_unused_versions_and_tokens_stay_readable(self, vault: ServeProcess) -> None:
        """--retire deletes the old data key once nothing names it; every token still reads."""
        slug, agency_id, secret = create_agency(vault)
        tokens = [vault.create_token(secret) for _ in range(3)]
        cli(vault, "keys", "rotate", "--agency", slug).assert_ok()
        report = cli(vault, "keys", "rewrap", "--agency", slug, "--retire").assert_ok().json()
        assert report["retired_versions"] == [1]
        assert report["old_versions_left"] == []
        client = vault.redis()
        fields = client.hkeys(agency_key(agency_id))
        assert b"dk:1" not in fields
        assert b"dk:2" in fields
        client.close()
        assert cli(vault, "keys", "status").assert_ok().json()["agencies"][slug]["versions"] == [2]
        for token in tokens:
            assert vault.token_status(secret, token["id"]) == 200
        vault.create_token(secret)

    def test_retire_waits_until_servers_stop_writing_the_old_version(self, vault: ServeProcess) -> None:
        """Right after a rotation --retire keeps the old version (servers may cache it), and retires it later."""
        slug, _, secret = create_agency(vault)
        token = vault.create_token(secret)
        cli(vault, "keys", "rotate", "--agency", slug).assert_ok()
        cached = {**vault.env, "CARDVAULT_AUTH__CACHE_SECONDS": "3"}
        args = ("keys", "rewrap", "--agency", slug, "--retire", "--data-dir", vault.data_dir)
        early = run_cli(*args, env=cached, cwd=vault.workdir).assert_ok()
        report = early.json()
        assert report["retired_versions"] == []
        assert 0 < report["retire_deferred_seconds"] <= 3
        assert "again" in early.stderr
        assert cli(vault, "keys", "status").assert_ok().json()["agencies"][slug]["versions"] == [1, 2]

        time.sleep(report["retire_deferred_seconds"] + 0.5)
        later = run_cli(*args, env=cached, cwd=vault.workdir).assert_ok().json()
        assert later["retired_versions"] == [1]
        assert later["retire_deferred_seconds"] == 0
        assert vault.token_status(secret, token["id"]) == 200


class Interrupted(Exception):
    """Stands in for a crash or Ctrl-C in the middle of a rewrap."""


class TestRewrapResume:
    @staticmethod
    def env(tmp_path: Path, redis_url: str) -> dict[str, str]:
        key = tmp_path / "master.key"
        if not key.exists():
            run_cli("keys", "generate-master", "--output", key, cwd=tmp_path).assert_ok()
        return {
            "CARDVAULT_REDIS_URL": redis_url,
            "CARDVAULT_KEYS__MASTER_KEY_FILE": str(key),
            "CARDVAULT_DATA_DIR": str(tmp_path / "var"),
            "CARDVAULT_AUTH__CACHE_SECONDS": "0",
        }

    @staticmethod
    async def write_tokens(env: dict[str, str], slug: str, count: int, numbers: list[str] | None = None) -> str:
        """Tokenize ``count`` cards directly through the vault's own code; returns the agency id.

        The cards alternate between two test numbers, or are ``numbers`` (one token each).
        """
        settings = load_settings(None, environ=env)
        async with open_runtime(settings) as rt:
            row = await rt.agencies.row(slug)
            principal = Principal(row.agency, KeyKind.SECRET, rt.agencies.keys_for(row))
            vault = Vault(rt.store, settings.tokens, system_clock)
            visa, mastercard = parse_card_number(VISA), parse_card_number(MASTERCARD)
            cvc = parse_cvc(CVC, visa.brand)

            async def one(i: int) -> None:
                number = parse_card_number(numbers[i]) if numbers else (visa if i % 2 else mastercard)
                request = TokenizeRequest(number, 12, 2031, cvc=cvc if i % 3 == 0 else None)
                await vault.tokenize(principal, request)

            for start in range(0, count, 200):
                await asyncio.gather(*(one(i) for i in range(start, min(count, start + 200))))
            return row.agency.id

    @staticmethod
    async def interrupted_rewrap(env: dict[str, str], slug: str, batches: int) -> None:
        """Run the rewrap the CLI runs, and crash it after ``batches`` batches."""
        calls = itertools.count(1)

        def progress(_: int) -> None:
            if next(calls) >= batches:
                raise Interrupted

        async with open_runtime(load_settings(None, environ=env)) as rt:
            row = await rt.agencies.row(slug)
            with pytest.raises(Interrupted):
                await rekey.rewrap_agency(rt.store, rt.keyring, row, progress=progress)

    async def prepared(self, tmp_path: Path, fresh_redis: RedisServer) -> tuple[dict[str, str], str, str, int]:
        """An agency with thousands of version-1 ciphertexts, rotated to version 2, rewrap crashed midway."""
        env = self.env(tmp_path, fresh_redis.url)
        slug = new_slug("bulk")
        run_cli("agency", "create", slug, "--origin", "https://shop.example.gov", env=env, cwd=tmp_path).assert_ok()
        agency_id = await self.write_tokens(env, slug, BULK_TOKENS)
        client = fresh_redis.client()
        total = len(ciphertext_versions(client, agency_id))
        assert total == BULK_TOKENS + BULK_TOKENS // 3
        run_cli("keys", "rotate", "--agency", slug, env=env, cwd=tmp_path).assert_ok()

        await self.interrupted_rewrap(env, slug, batches=2)
        saved = cast(bytes | None, client.get(rekey.cursor_key(agency_id)))
        assert saved is not None
        assert rekey.saved_cursor(saved, 2) not in ("", "0:0"), saved
        versions = ciphertext_versions(client, agency_id)
        assert len(versions) == total
        assert 0 < sum(v == 2 for v in versions.values()) < total, "the crash should leave a mix of versions"
        return env, slug, agency_id, total

    async def test_interrupted_rewrap_resumes_and_finishes(self, tmp_path: Path, fresh_redis: RedisServer) -> None:
        """A rewrap that crashed after two batches resumes from its saved cursor and ends all on version 2."""
        env, slug, agency_id, total = await self.prepared(tmp_path, fresh_redis)
        client = fresh_redis.client()
        resumed = run_cli("keys", "rewrap", "--agency", slug, env=env, cwd=tmp_path).assert_ok().json()
        assert 0 < resumed["scanned"] < total, "a resumed pass must not start from the beginning"
        assert resumed["unreadable"] == 0
        assert set(ciphertext_versions(client, agency_id).values()) == {2}
        assert client.exists(rekey.cursor_key(agency_id)) == 0

        again = run_cli("keys", "rewrap", "--agency", slug, "--retire", env=env, cwd=tmp_path).assert_ok().json()
        assert again["rewrapped"] == 0
        assert again["scanned"] == total
        assert again["retired_versions"] == [1]
        assert set(ciphertext_versions(client, agency_id).values()) == {2}

    async def test_resume_after_another_rotation_reaches_the_newest_version(
        self, tmp_path: Path, fresh_redis: RedisServer
    ) -> None:
        """A pass saved toward version 2 is not resumed once version 3 exists: everything ends on 3."""
        env, slug, agency_id, total = await self.prepared(tmp_path, fresh_redis)
        run_cli("keys", "rotate", "--agency", slug, env=env, cwd=tmp_path).assert_ok()
        done = run_cli("keys", "rewrap", "--agency", slug, env=env, cwd=tmp_path).assert_ok().json()
        assert done["scanned"] == total
        assert set(ciphertext_versions(fresh_redis.client(), agency_id).values()) == {3}

    async def test_restart_flag_ignores_saved_progress(self, tmp_path: Path, fresh_redis: RedisServer) -> None:
        """--restart scans from the beginning even with a saved cursor."""
        env, slug, agency_id, total = await self.prepared(tmp_path, fresh_redis)
        done = run_cli("keys", "rewrap", "--agency", slug, "--restart", env=env, cwd=tmp_path).assert_ok().json()
        assert done["scanned"] == total
        assert set(ciphertext_versions(fresh_redis.client(), agency_id).values()) == {2}


class TestMasterKeyRotation:
    @staticmethod
    def config(directory: Path, name: str, master: Path, *previous: Path) -> Path:
        path = directory / f"{name}.yaml"
        keys = {"master_key_file": str(master), "previous_master_key_files": [str(p) for p in previous]}
        path.write_text(yaml.safe_dump({"keys": keys, "auth": {"cache_seconds": 0}}))
        return path

    @staticmethod
    def key_id(path: Path) -> str:
        return parse_master_key(path.read_text(), source=str(path)).key_id.hex()

    def test_move_everything_to_a_new_master_key_and_drop_the_old(self, serve: ServeFactory, tmp_path: Path) -> None:
        """With B current and A previous, rewrap moves pepper and agency keys to B; then B alone reads all."""
        keys_dir = tmp_path / "keys"
        key_a, key_b = keys_dir / "a.key", keys_dir / "b.key"
        for path in (key_a, key_b):
            run_cli("keys", "generate-master", "--output", path, cwd=tmp_path).assert_ok()
        only_a = self.config(tmp_path, "only-a", key_a)
        b_then_a = self.config(tmp_path, "b-then-a", key_b, key_a)
        only_b = self.config(tmp_path, "only-b", key_b)
        data_dir = tmp_path / "var"

        first = serve("--config", only_a, name="with-a").start()
        assert first.keys is not None
        secret = first.keys.secret
        tokens = [first.create_token(secret) for _ in range(3)]
        first.stop()

        refused = serve("--config", only_b, name="b-too-early")
        refused.spawn()
        assert refused.wait_exit() != 0
        assert "previous_master_key_files" in refused.stderr
        early = run_cli("agency", "list", "--config", only_b, "--data-dir", data_dir, cwd=tmp_path)
        early.assert_one_error(self.key_id(key_a))

        moved = run_cli("keys", "rewrap", "--config", b_then_a, "--data-dir", data_dir, cwd=tmp_path).assert_ok()
        assert "pepper" in moved.stderr
        report = [line for line in moved.stdout.splitlines() if line.startswith("{")]
        assert len(report) == 1
        assert '"keys_rewrapped": 2' in report[0]  # data key v1 and the fingerprint key

        key_a.unlink()
        status = run_cli("keys", "status", "--config", only_b, "--data-dir", data_dir, cwd=tmp_path).assert_ok().json()
        assert status["master_key_id"] == self.key_id(key_b)
        assert status["pepper_wrapped_by"] == self.key_id(key_b)
        assert status["agencies"]["demo"]["wrapped_by"] == [self.key_id(key_b)]

        second = serve("--config", only_b, name="with-b").start()
        assert second.keys is not None
        assert second.keys.secret == secret
        for token in tokens:
            answer = second.request("GET", f"/v1/tokens/{token['id']}", key=secret)
            assert answer.status == 200, answer.body
            assert answer.json()["card"]["fingerprint"] == token["card"]["fingerprint"]
        second.create_token(secret)
        second.stop()
