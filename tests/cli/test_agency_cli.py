"""`cardvault agency ...` run as real processes against the data dir of a running `cardvault serve`."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from service.adapters.redis_base import AGENCIES_KEY, agency_key, api_key_key, token_key
from tests.conftest import master_key_text
from tests.support.cards import AMEX, AMEX_CVC
from tests.support.keys import agency_data_keys
from tests.support.redis_server import RedisServer
from tests.support.serve import CliResult, ServeFactory, ServeProcess, run_cli

pytestmark = pytest.mark.slow

_slugs = itertools.count(1)


def new_slug(prefix: str = "agency") -> str:
    return f"{prefix}-{os.getpid()}-{next(_slugs)}"


@pytest.fixture(scope="class")
def vault(tmp_path_factory: pytest.TempPathFactory, leak_sources: Any) -> Iterator[ServeProcess]:
    """A development serve on the embedded Redis that trusts no cached API-key lookup."""
    with ServeFactory(tmp_path_factory.mktemp("agency-cli"), leak_sources) as factory:
        process = factory(env={"CARDVAULT_AUTH__CACHE_SECONDS": "0"}).start()
        yield process
        process.stop()


def cli(vault: ServeProcess, *args: str, input: str | None = None) -> CliResult:
    """A command on the same data dir (and so the same embedded Redis) as the running serve."""
    return run_cli(*args, "--data-dir", vault.data_dir, env=vault.env, cwd=vault.workdir, input=input)


def create(vault: ServeProcess, slug: str, *origins: str) -> dict[str, Any]:
    flags = [part for origin in origins or ("https://shop.example.gov",) for part in ("--origin", origin)]
    created: dict[str, Any] = cli(vault, "agency", "create", slug, *flags).assert_ok().json()
    return created


def listed(vault: ServeProcess) -> dict[str, dict[str, Any]]:
    agencies = cli(vault, "agency", "list", "--json").assert_ok().json()["agencies"]
    return {a["slug"]: a for a in agencies}


def everything_in(client: redis.Redis) -> bytes:
    """Every key and every string, hash and set value of a Redis, concatenated."""
    parts: list[bytes] = []
    for key in client.scan_iter(count=1000):
        parts.append(cast(bytes, key))
        kind = client.type(key)
        if kind == b"string":
            parts.append(cast(bytes, client.get(key) or b""))
        elif kind == b"hash":
            parts += [k + v for k, v in cast(dict[bytes, bytes], client.hgetall(key)).items()]
        elif kind == b"set":
            parts += cast(set[bytes], client.smembers(key))
    client.close()
    return b"\n".join(parts)


def redis_keys(client: redis.Redis, pattern: str) -> list[bytes]:
    return sorted(client.scan_iter(match=pattern, count=1000))


class TestAgencyCreate:
    def test_create_prints_keys_that_work_at_once_over_https(self, vault: ServeProcess) -> None:
        """create prints the agency and both keys, and the running serve accepts them immediately."""
        slug = new_slug()
        redis_pid = vault.redis_pid
        created = create(vault, slug, "https://Shop.Example.gov:443", "https://pay.example.gov:8443")
        assert set(created) == {"agency", "publishable_key", "secret_key"}
        assert created["agency"]["slug"] == slug
        assert created["agency"]["status"] == "active"
        assert created["agency"]["id"].startswith("agy_")
        assert created["agency"]["origins"] == ["https://shop.example.gov", "https://pay.example.gov:8443"]
        assert created["publishable_key"].startswith("pk_")
        assert created["secret_key"].startswith("sk_")

        client = vault.redis()
        assert int(client.info("server")["process_id"]) == redis_pid, "the command must use serve's Redis"
        client.close()

        token = vault.create_token(created["secret_key"])
        assert vault.token_status(created["secret_key"], token["id"]) == 200
        public = vault.request(
            "POST",
            "/v1/tokens",
            key=created["publishable_key"],
            body={"card": {"number": AMEX, "exp_month": 1, "exp_year": 2032, "cvc": AMEX_CVC}},
            headers={"Origin": "https://shop.example.gov"},
        )
        assert public.status == 201, public.body
        elsewhere = vault.request(
            "POST",
            "/v1/tokens",
            key=created["publishable_key"],
            body={"card": {"number": AMEX, "exp_month": 1, "exp_year": 2032}},
            headers={"Origin": "https://evil.example.com"},
        )
        assert elsewhere.status == 403
        assert vault.token_status(created["publishable_key"], token["id"]) == 403

    def test_duplicate_slug_is_refused_and_keeps_the_first_keys(self, vault: ServeProcess) -> None:
        """A second create with the same slug fails with one line; the first agency's keys still work."""
        slug = new_slug()
        first = create(vault, slug)
        again = cli(vault, "agency", "create", slug, "--origin", "https://other.example.gov")
        again.assert_one_error(slug, "already exists")
        assert again.stdout == ""
        assert listed(vault)[slug]["origins"] == ["https://shop.example.gov"]
        vault.create_token(first["secret_key"])

    @pytest.mark.parametrize("slug", ["Bad_Slug", "trailing-", "x" * 64, "has space"])
    def test_bad_slug_is_refused(self, vault: ServeProcess, slug: str) -> None:
        """A slug outside lowercase letters, digits and inner dashes is one Error line, nothing created."""
        cli(vault, "agency", "create", slug, "--origin", "https://shop.example.gov").assert_one_error("slug")
        assert slug not in listed(vault)

    @pytest.mark.parametrize(
        "origin",
        ["ftp://shop.example.gov", "https://shop.example.gov/checkout", "http://shop.example.gov", "shop.example.gov"],
    )
    def test_bad_origin_is_refused(self, vault: ServeProcess, origin: str) -> None:
        """An origin that is not https://host[:port] (http only for localhost) is one Error line naming it."""
        slug = new_slug()
        cli(vault, "agency", "create", slug, "--origin", origin).assert_one_error("origin", origin)
        assert slug not in listed(vault)

    def test_list_as_table_and_as_json(self, vault: ServeProcess) -> None:
        """list prints a table with slug, id, status and origins, and --json the same agencies."""
        slug = new_slug()
        created = create(vault, slug, "https://parks.example.gov")
        table = cli(vault, "agency", "list").assert_ok().stdout.splitlines()
        assert table[0].split() == ["SLUG", "ID", "STATUS", "CREATED", "ORIGINS"]
        row = next(line for line in table if line.startswith(slug + " "))
        assert created["agency"]["id"] in row
        assert "active" in row
        assert row.endswith("https://parks.example.gov")
        assert "demo" in [line.split()[0] for line in table[1:]]
        as_json = listed(vault)[slug]
        assert as_json == created["agency"]
        assert "secret_key" not in str(listed(vault))


class TestAgencyKeys:
    def test_api_keys_are_stored_only_as_keyed_hashes(self, vault: ServeProcess) -> None:
        """Neither key string, nor its random part, appears in any Redis key or value or the AOF file."""
        created = create(vault, new_slug())
        vault.create_token(created["secret_key"])
        secrets = [created["secret_key"], created["publishable_key"]]
        needles = [s.encode() for s in secrets] + [s[3:].encode() for s in secrets]
        haystack = everything_in(vault.redis())
        aof = b"".join(p.read_bytes() for p in vault.embedded.directory.glob("*.aof*") if p.is_file())
        for needle in needles:
            assert needle not in haystack
            assert needle not in aof
        assert api_key_key("").encode() in haystack, "the scan saw no API-key entries at all"

    def test_rotate_keys_revokes_the_old_pair(self, vault: ServeProcess) -> None:
        """rotate-keys prints a new pair; the old secret and publishable keys get 401 at once."""
        slug = new_slug()
        old = create(vault, slug)
        token = vault.create_token(old["secret_key"])
        rotated = cli(vault, "agency", "rotate-keys", slug).assert_ok().json()
        assert rotated["agency"] == slug
        assert rotated["old_keys_valid_for_hours"] == 0
        assert rotated["secret_key"] != old["secret_key"]
        assert vault.token_status(old["secret_key"], token["id"]) == 401
        assert vault.request("POST", "/v1/tokens", key=old["publishable_key"], body={}).status == 401
        assert vault.token_status(rotated["secret_key"], token["id"]) == 200

    def test_rotate_keys_with_grace_keeps_the_old_pair_working(self, vault: ServeProcess) -> None:
        """--grace-hours 1 lets both the old and the new secret key work."""
        slug = new_slug()
        old = create(vault, slug)
        token = vault.create_token(old["secret_key"])
        rotated = cli(vault, "agency", "rotate-keys", slug, "--grace-hours", "1").assert_ok().json()
        assert rotated["old_keys_valid_for_hours"] == 1
        assert vault.token_status(old["secret_key"], token["id"]) == 200
        assert vault.token_status(rotated["secret_key"], token["id"]) == 200

    def test_rotate_keys_without_grace_also_revokes_keys_still_in_grace(self, vault: ServeProcess) -> None:
        """After a graceful rotation, a rotation without grace (a leak) leaves only the newest pair working."""
        slug = new_slug()
        first = create(vault, slug)
        token = vault.create_token(first["secret_key"])
        second = cli(vault, "agency", "rotate-keys", slug, "--grace-hours", "1").assert_ok().json()
        third = cli(vault, "agency", "rotate-keys", slug).assert_ok().json()
        assert vault.token_status(first["secret_key"], token["id"]) == 401
        assert vault.token_status(second["secret_key"], token["id"]) == 401
        assert vault.token_status(third["secret_key"], token["id"]) == 200

    def test_disable_refuses_every_key_and_enable_restores_them(self, vault: ServeProcess) -> None:
        """disable makes both keys 401 (tokens kept); enable makes them work again."""
        slug = new_slug()
        created = create(vault, slug)
        token = vault.create_token(created["secret_key"])
        disabled = cli(vault, "agency", "disable", slug).assert_ok().json()
        assert disabled["agency"]["status"] == "disabled"
        assert vault.token_status(created["secret_key"], token["id"]) == 401
        assert vault.request("POST", "/v1/tokens", key=created["publishable_key"], body={}).status == 401
        assert listed(vault)[slug]["status"] == "disabled"
        client = vault.redis()
        assert client.exists(token_key(created["agency"]["id"], token["id"])) == 1
        client.close()

        enabled = cli(vault, "agency", "enable", slug).assert_ok().json()
        assert enabled["agency"]["status"] == "active"
        assert vault.token_status(created["secret_key"], token["id"]) == 200

    def test_commands_on_an_unknown_agency_are_one_line(self, vault: ServeProcess) -> None:
        """rotate-keys, disable, enable and shred of a slug that does not exist fail with one line."""
        for command in (["rotate-keys"], ["disable"], ["enable"], ["shred", "--yes"]):
            cli(vault, "agency", *command, "no-such-agency").assert_one_error("no-such-agency")


class TestAgencyShred:
    def test_wrong_confirmation_changes_nothing(self, vault: ServeProcess) -> None:
        """shred asks for the slug; any other answer exits non-zero and leaves keys and tokens alone."""
        slug = new_slug()
        created = create(vault, slug)
        token = vault.create_token(created["secret_key"])
        done = cli(vault, "agency", "shred", slug, input="not-the-slug\n")
        done.assert_one_error("not confirmed")
        assert "Type the agency slug" in done.stderr
        assert vault.token_status(created["secret_key"], token["id"]) == 200
        assert listed(vault)[slug]["status"] == "active"

    def test_typing_the_slug_confirms(self, vault: ServeProcess) -> None:
        """Typing the slug at the prompt shreds the agency."""
        slug = new_slug()
        create(vault, slug)
        done = cli(vault, "agency", "shred", slug, input=f"{slug}\n").assert_ok()
        assert done.json()["status"] == "shredded"
        assert listed(vault)[slug]["status"] == "shredded"

    def test_shred_destroys_data_keys_and_ciphertexts(self, vault: ServeProcess) -> None:
        """--yes deletes the agency's data and fingerprint keys and every ciphertext; others are untouched."""
        slug = new_slug()
        doomed = create(vault, slug)
        bystander = create(vault, new_slug("bystander"))
        tokens = [vault.create_token(doomed["secret_key"]) for _ in range(3)]
        kept = vault.create_token(bystander["secret_key"])
        agency_id = doomed["agency"]["id"]
        client = vault.redis()
        assert len(list(agency_data_keys(client, agency_id, "tok"))) == 3
        assert len(list(agency_data_keys(client, agency_id, "cvc"))) == 3

        report = cli(vault, "agency", "shred", slug, "--yes").assert_ok().json()
        assert report["status"] == "shredded"
        assert report["records_removed"] >= 6

        assert list(agency_data_keys(client, agency_id, "tok")) == []
        assert list(agency_data_keys(client, agency_id, "cvc")) == []
        assert list(agency_data_keys(client, agency_id, "fp")) == []
        stored = cast(dict[bytes, bytes], client.hgetall(agency_key(agency_id)))
        record = {k.decode(): v for k, v in stored.items()}
        assert record["status"] == b"shredded"
        assert not [name for name in record if name.startswith("dk:") or name == "fk"]
        client.close()
        for token in tokens:
            assert vault.token_status(doomed["secret_key"], token["id"]) in (401, 404)
        assert vault.token_status(bystander["secret_key"], kept["id"]) == 200
        assert listed(vault)[slug]["status"] == "shredded"
        cli(vault, "agency", "rotate-keys", slug).assert_one_error("shredded")
        cli(vault, "agency", "enable", slug).assert_one_error("shredded")


class TestAgencyOnExternalRedis:
    def test_commands_use_the_configured_redis_and_start_none(
        self, tmp_path: Path, redis_server: RedisServer, master_keys: Any
    ) -> None:
        """With CARDVAULT_REDIS_URL the commands work on that Redis and no embedded Redis appears."""
        env = {"CARDVAULT_REDIS_URL": redis_server.url, "CARDVAULT_MASTER_KEY": master_key_text(master_keys)}
        slug = new_slug("external")
        created = run_cli("agency", "create", slug, "--origin", "https://x.example.gov", env=env, cwd=tmp_path)
        agency_id = created.assert_ok().json()["agency"]["id"]
        assert redis_server.client().hget(AGENCIES_KEY, slug) == agency_id.encode()
        run_cli("agency", "disable", slug, env=env, cwd=tmp_path).assert_ok()
        agencies = run_cli("agency", "list", "--json", env=env, cwd=tmp_path).assert_ok().json()["agencies"]
        assert {a["slug"]: a["status"] for a in agencies}[slug] == "disabled"
        assert not (tmp_path / "var").exists()
