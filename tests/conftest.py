"""Fixtures shared by the whole suite.

Every session (every xdist worker) starts its own redis-server, sends every
log record of the in-process app to a JSON log file, and at the very end
scans that log, every Redis the session started (keys and values), their
AOF files, the logs of every `cardvault` process the tests ran, and every
response body a test client read, for the test card numbers and CVCs.  A
hit fails the run.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import pytest
from aiohttp.test_utils import TestClient

from service.adapters import crypto
from service.adapters.keyring import MasterKey, MasterKeys
from service.app import create_app
from service.http.state import SERVICES
from service.logs import configure_logging
from service.settings import Settings
from service.settings_loader import load_settings
from tests.support import leaks
from tests.support.redis_server import RedisServer
from tests.support.redis_topologies import RedisClusterTopology


class LeakSources:
    """Everything the end-of-session scan looks at."""

    def __init__(self) -> None:
        self.log_files: list[Path] = []
        self.redis_servers: list[RedisServer] = []
        self.responses = leaks.ResponseRecorder()  # bodies the test clients read (aiohttp_client below)

    def scan(self) -> list[str]:
        findings: list[str] = list(self.responses.findings)
        for path in self.log_files:
            if path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace")
                findings += [f"{path}: card {pan[:6]}..." for pan in leaks.cards_in_text(text)]
                findings += [f"{path}: cvc in {line}" for line in leaks.cvc_fields_in_json_lines(text)]
        for server in self.redis_servers:
            if server.process is not None:
                findings += leaks.redis_findings(server.client())
            findings += leaks.file_findings(server.aof_files())
        return findings


_SOURCES = LeakSources()


@pytest.fixture(scope="session")
def leak_sources() -> LeakSources:
    return _SOURCES


@pytest.fixture(scope="session", autouse=True)
def session_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """All in-process logs go to one JSON file, scanned at the end of the session."""
    path = tmp_path_factory.mktemp("logs") / "service.jsonl"
    stream: IO[str] = path.open("a", encoding="utf-8", buffering=1)
    configure_logging("debug", stream)
    _SOURCES.log_files.append(path)
    yield path
    stream.close()


@pytest.fixture(scope="session", autouse=True)
def leak_guard(session_logs: Path) -> Iterator[None]:
    """Fail the run if any test card number or CVC reached a log, Redis, or an AOF file."""
    yield
    findings = _SOURCES.scan()
    for server in _SOURCES.redis_servers:
        server.stop()
    if findings:
        pytest.fail("card data leaked:\n" + "\n".join(findings[:50]), pytrace=False)


@pytest.fixture
def aiohttp_client(aiohttp_client: Any) -> Any:
    """pytest-aiohttp's client factory, recording every response body a test reads for the leak guard."""

    async def make(app_or_server: Any, **kwargs: Any) -> Any:
        kwargs["trace_configs"] = [*kwargs.get("trace_configs", []), _SOURCES.responses.trace_config()]
        return await aiohttp_client(app_or_server, **kwargs)

    return make


#: ``CARDVAULT_TEST_REDIS=cluster``: the session's Redis is a Redis Cluster of three masters instead of one
#: server, so the same tests run against the cluster (README, "Standalone, Sentinel or Cluster").
TEST_TOPOLOGY = os.environ.get("CARDVAULT_TEST_REDIS", "standalone")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server: RedisServer
    if TEST_TOPOLOGY == "cluster":
        server = cast(RedisServer, RedisClusterTopology(tmp_path_factory.mktemp("redis-cluster")).start())
    else:
        server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    _SOURCES.redis_servers.append(server)
    yield server  # noqa: PT022 - the leak guard stops it after scanning it


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, for tests that crash it or need a clean keyspace."""
    server = RedisServer(tmp_path / "redis").start()
    _SOURCES.redis_servers.append(server)
    yield server
    findings = leaks.redis_findings(server.client()) + leaks.file_findings(server.aof_files())
    server.stop()
    assert not findings, findings


@pytest.fixture(scope="session")
def master_keys() -> MasterKeys:
    """One master key per session: the session's Redis holds a pepper wrapped under it."""
    return MasterKeys(MasterKey(crypto.random_key(), source="tests"))


def master_key_text(keys: MasterKeys) -> str:
    return base64.b64encode(keys.current.secret).decode()


class FakeClock:
    """Real time plus an offset the test can move."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        import time

        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_settings(redis_url: str, data_dir: Path, **overrides: Any) -> Settings:
    raw: dict[str, Any] = {
        "redis": {"url": redis_url},
        "data_dir": str(data_dir),
        "auth": {"cache_seconds": 0},
        # The suite tokenizes the same test cards far more often than any shopper: velocity limits are
        # off unless a test turns them on (tests/http/test_velocity*.py pass velocity={...}).
        "velocity": {"enabled": False},
    }
    for key, value in overrides.items():
        section, _, leaf = key.partition("__")
        if leaf:
            raw.setdefault(section, {})[leaf] = value
        else:
            raw[section] = value
    return load_settings(None, environ={}, overrides=raw)


@pytest.fixture
def settings(redis_server: RedisServer, tmp_path: Path) -> Settings:
    return make_settings(redis_server.url, tmp_path / "var")


@pytest.fixture
async def client(
    aiohttp_client: Any, settings: Settings, master_keys: MasterKeys, clock: FakeClock
) -> TestClient[Any, Any]:
    app = create_app(settings, master_keys, redis_url=settings.redis.url or "", clock=clock, tls=False)
    test_client: TestClient[Any, Any] = await aiohttp_client(app)
    return test_client


@dataclass
class AgencyKeys:
    slug: str
    id: str
    publishable: str
    secret: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}

    @property
    def public_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.publishable}"}


_counter = iter(range(1, 10**9))


async def create_agency(client: TestClient[Any, Any], *origins: str) -> AgencyKeys:
    service = client.app[SERVICES].agencies
    assert service is not None
    slug = f"agency-{os.getpid()}-{next(_counter)}"
    agency, issued = await service.create(slug, origins or ("https://shop.example.gov",))
    return AgencyKeys(slug, agency.id, issued.publishable_key, issued.secret_key)


@pytest.fixture
async def agency(client: TestClient[Any, Any]) -> AgencyKeys:
    return await create_agency(client)


@pytest.fixture
async def other_agency(client: TestClient[Any, Any]) -> AgencyKeys:
    return await create_agency(client, "https://parks.example.gov")


@pytest.fixture
def card_body() -> dict[str, Any]:
    from tests.support.cards import CVC, VISA

    return {"card": {"number": VISA, "exp_month": 12, "exp_year": 2031, "cvc": CVC}}


@pytest.fixture
async def no_leaks_in(redis_server: RedisServer) -> AsyncIterator[None]:
    yield
    assert not leaks.redis_findings(redis_server.client())
