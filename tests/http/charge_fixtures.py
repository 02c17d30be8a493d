"""Fixtures for the charges tests: an app whose processor is a real local Authorize.Net fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.adapters.keyring import MasterKeys
from service.agency_settings import AgencySettingsService
from service.app import create_app
from service.domain.processing import ProcessorName
from service.http.state import SERVICES
from tests.conftest import AgencyKeys, FakeClock, create_agency, make_settings
from tests.support.cards import CVC, VISA
from tests.support.fake_authorize_net import FakeAuthorizeNet
from tests.support.redis_server import RedisServer

Client = TestClient[Any, Any]


@pytest.fixture
async def authnet(tmp_path: Path) -> AsyncIterator[FakeAuthorizeNet]:
    async with FakeAuthorizeNet() as fake:
        yield fake


def charge_settings(redis_url: str, tmp_path: Path, ca_file: Path | None, **processors: Any) -> Any:
    options = {"timeout_seconds": 2.0, "breaker_failures": 3, "breaker_reset_seconds": 1.0, "sandbox_slow_seconds": 3.0}
    options.update(processors)
    if ca_file is not None:
        options["ca_file"] = str(ca_file)
    return make_settings(redis_url, tmp_path / "var", processors=options)


@pytest.fixture
async def pay_client(
    aiohttp_client: Any,
    redis_server: RedisServer,
    master_keys: MasterKeys,
    clock: FakeClock,
    tmp_path: Path,
    authnet: FakeAuthorizeNet,
) -> Client:
    settings = charge_settings(redis_server.url, tmp_path, authnet.write_ca_pem(tmp_path / "authnet-ca.pem"))
    app = create_app(settings, master_keys, redis_url=redis_server.url, clock=clock, tls=False)
    client: Client = await aiohttp_client(app)
    return client


async def with_authorize_net(client: Client, agency: AgencyKeys, fake: FakeAuthorizeNet) -> None:
    agencies = client.app[SERVICES].agencies
    assert agencies is not None
    await AgencySettingsService(agencies).set_processor(
        agency.slug,
        ProcessorName.AUTHORIZE_NET,
        login_id=fake.login_id,
        transaction_key=fake.transaction_key,
        endpoint=fake.endpoint,
    )


@pytest.fixture
async def anet_agency(pay_client: Client, authnet: FakeAuthorizeNet) -> AgencyKeys:
    """An agency whose charges go to the Authorize.Net fake."""
    agency = await create_agency(pay_client)
    await with_authorize_net(pay_client, agency, authnet)
    return agency


@pytest.fixture
async def sandbox_agency(pay_client: Client) -> AgencyKeys:
    """An agency on the default sandbox processor."""
    return await create_agency(pay_client)


async def tokenize(
    client: Client, agency: AgencyKeys, number: str = VISA, *, cvc: str | None = CVC, **card: Any
) -> str:
    body = {"card": {"number": number, "exp_month": 12, "exp_year": 2031, **card}}
    if cvc is not None:
        body["card"]["cvc"] = cvc
    resp = await client.post("/v1/tokens", json=body, headers=agency.auth)
    assert resp.status == 201, await resp.text()
    token_id: str = (await resp.json())["id"]
    return token_id


async def charge(client: Client, agency: AgencyKeys, token: str, amount: int = 2500, **extra: Any) -> Any:
    headers = dict(agency.auth)
    if "idempotency_key" in extra:
        headers["Idempotency-Key"] = extra.pop("idempotency_key")
    return await client.post("/v1/charges", json={"token": token, "amount": amount, **extra}, headers=headers)
