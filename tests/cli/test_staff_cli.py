"""`cardvault staff ...` in process against the session's Redis: add prints a link, list, disable, reset, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from service.adapters.keyring import MasterKeys
from service.cli import cli
from tests.conftest import master_key_text
from tests.support.redis_server import RedisServer


@pytest.fixture
def run(redis_server: RedisServer, master_keys: MasterKeys, tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {
        "CARDVAULT_REDIS_URL": redis_server.url,
        "CARDVAULT_MASTER_KEY": master_key_text(master_keys),
        "CARDVAULT_DATA_DIR": str(tmp_path / "var"),
        "CARDVAULT_STAFF__PUBLIC_URL": "https://vault.example.gov",
    }

    def invoke(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
        return result.exit_code, result.output

    return invoke


def slug() -> str:
    return f"cli-staff-{os.getpid()}-{os.urandom(3).hex()}"


class TestStaffCli:
    def test_add_list_disable_reset(self, run) -> None:  # type: ignore[no-untyped-def]
        """add prints a one-time link under staff.public_url; list shows it; disable and reset change its status."""
        agency = slug()
        assert run("agency", "create", agency, "--origin", "https://shop.example.gov")[0] == 0
        code, out = run("staff", "add", f"{agency}-ann", "--agency", agency, "--role", "supervisor")
        assert code == 0, out
        added = json.loads(out)
        assert added["enrollment_link"].startswith("https://vault.example.gov/staff/enroll?token=")
        assert added["staff"]["status"] == "pending"
        assert added["expires_in_hours"] == 24
        listed = json.loads(run("staff", "list", "--agency", agency, "--json")[1])
        assert [m["username"] for m in listed["staff"]] == [f"{agency}-ann"]
        assert json.loads(run("staff", "disable", f"{agency}-ann", "--agency", agency)[1])["staff"]["status"] == (
            "disabled"
        )
        reset = json.loads(run("staff", "reset", f"{agency}-ann", "--agency", agency)[1])
        assert reset["staff"]["status"] == "pending"
        assert reset["enrollment_link"] != added["enrollment_link"]
        table = run("staff", "list", "--agency", agency)[1]
        assert "supervisor" in table
        assert "pending" in table

    def test_errors_are_one_line(self, run) -> None:  # type: ignore[no-untyped-def]
        """Unknown agency, taken username and bad role each end with an error and exit status 1 or 2."""
        agency = slug()
        run("agency", "create", agency, "--origin", "https://shop.example.gov")
        code, out = run("staff", "add", "bob", "--agency", "no-such-agency", "--role", "agent")
        assert code == 1
        assert "Error: no agency" in out
        name = f"{agency}-bob"
        assert run("staff", "add", name, "--agency", agency, "--role", "agent")[0] == 0
        code, out = run("staff", "add", name, "--agency", agency, "--role", "agent")
        assert code == 1
        assert "is taken" in out
        assert run("staff", "add", "x", "--agency", agency, "--role", "king")[0] == 2
        code, out = run("staff", "disable", "nobody-here", "--agency", agency)
        assert code == 1
        assert "no staff member" in out
