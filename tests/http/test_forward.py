"""POST /v1/forward against a real HTTPS destination on loopback: what goes out, what comes back, what is refused.

The destination (``tests.support.destination_server``) is a real aiohttp
server with a trustme certificate; the app trusts its CA through
``forward.ca_file``.  Because it listens on 127.0.0.1 its allowlist entries
need ``allow_private``, except in the tests that prove what happens without.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from service.adapters.keyring import MasterKeys
from service.agency_settings import AgencySettingsService
from service.app import create_app
from service.domain.processing import Destination, destinations_to_json
from service.http.state import SERVICES
from service.settings import Settings
from tests.conftest import AgencyKeys, create_agency, make_settings
from tests.support import leaks
from tests.support.cards import AMEX, AMEX_CVC, CVC, MASTERCARD, VISA
from tests.support.destination_server import DestinationServer
from tests.support.redis_server import RedisServer

Client = TestClient[Any, Any]
TIMEOUT = 5.0
FULL_TEMPLATE = (
    '{"card": {"number": "{{ %(t)s.number }}", "exp_month": {{%(t)s.exp_month}}, '
    '"exp_year": {{ %(t)s.exp_year }}, "cvc": "{{ %(t)s.cvc }}", "name": "{{ %(t)s.name }}"}, "amount": 1250}'
)
JSON = {"Content-Type": "application/json"}


def ref(token_id: str, field: str, pad: str = " ") -> str:
    """``{{ token.field }}``."""
    return "{{" + pad + token_id + "." + field + pad + "}}"


def as_json(**fields: str) -> str:
    """A JSON object body whose string values hold references."""
    return json.dumps(fields)


@pytest.fixture
async def destination(tmp_path: Path) -> AsyncIterator[DestinationServer]:
    async with DestinationServer(tmp_path) as server:
        yield server


@pytest.fixture
def settings(redis_server: RedisServer, tmp_path: Path, destination: DestinationServer) -> Settings:
    """The app trusts the destination's CA; the forward timeout is short enough for the suite."""
    return make_settings(
        redis_server.url,
        tmp_path / "var",
        forward__ca_file=str(destination.ca_pem),
        forward__timeout_seconds=TIMEOUT,
    )


async def app_client(
    aiohttp_client: Any, redis_server: RedisServer, tmp_path: Path, keys: MasterKeys, **forward: Any
) -> Client:
    """A second app on the same Redis with other forward settings."""
    overrides = {f"forward__{k}": v for k, v in forward.items()}
    settings = make_settings(redis_server.url, tmp_path / "other-var", **overrides)
    app = create_app(settings, keys, redis_url=redis_server.url, tls=False)
    started: Client = await aiohttp_client(app)
    return started


async def allow(client: Client, agency: AgencyKeys, url: str, *, allow_private: bool = True) -> None:
    agencies = client.app[SERVICES].agencies
    assert agencies is not None
    await AgencySettingsService(agencies).allow_destination(agency.slug, url, allow_private=allow_private)


async def tokenize(client: Client, agency: AgencyKeys, **card: Any) -> str:
    body = {"card": {"number": VISA, "exp_month": 12, "exp_year": 2031, "cvc": CVC, "name": "Ada Lovelace", **card}}
    format_ = body["card"].pop("format", None)
    if format_:
        body["format"] = format_
    response = await client.post("/v1/tokens", json=body, headers=agency.auth)
    assert response.status == 201, await response.text()
    token_id: str = (await response.json())["id"]
    return token_id


async def forward(
    client: Client,
    agency: AgencyKeys,
    url: str,
    body: str,
    *,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    auth: dict[str, str] | None = None,
    idempotency_key: str | None = None,
) -> ClientResponse:
    request_headers = dict(auth or agency.auth)
    if idempotency_key is not None:
        request_headers["Idempotency-Key"] = idempotency_key
    payload = {"destination": url, "method": method, "headers": JSON if headers is None else headers, "body": body}
    return await client.post("/v1/forward", json=payload, headers=request_headers)


async def cvc_retained(client: Client, agency: AgencyKeys, token_id: str) -> bool:
    response = await client.get(f"/v1/tokens/{token_id}", headers=agency.auth)
    assert response.status == 200
    retained: bool = (await response.json())["cvc_retained"]
    return retained


async def problem(response: ClientResponse, status: int, code: str) -> dict[str, Any]:
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/problem+json"
    body: dict[str, Any] = json.loads(text)
    assert body["code"] == code, body
    return body


# --- the happy path ------------------------------------------------------------------------------


class TestHappyPath:
    async def test_destination_gets_the_card_and_the_agency_gets_none_back(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """The destination receives number, expiry, CVC and name in the JSON; the answer carries no card data."""
        await allow(client, agency, destination.url("/pay"))
        token = await tokenize(client, agency)
        response = await forward(client, agency, destination.url("/pay/charge"), FULL_TEMPLATE % {"t": token})
        text = await response.text()
        assert response.status == 200, text
        sent = json.loads(destination.last.text)
        assert sent == {
            "card": {"number": VISA, "exp_month": 12, "exp_year": 2031, "cvc": CVC, "name": "Ada Lovelace"},
            "amount": 1250,
        }
        assert destination.last.path == "/pay/charge"
        assert destination.last.headers["Content-Type"] == "application/json"
        answer = json.loads(text)
        assert set(answer) == {"status", "headers", "body"}
        assert answer["status"] == 200
        assert leaks.cards_in_text(text) == []
        echoed = json.loads(answer["body"])["echo"]
        assert '"cvc": "[REDACTED CVC]"' in echoed
        assert CVC not in text
        assert "[REDACTED CARD ****4242]" in echoed

    async def test_only_safe_headers_come_back(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """Content-Type and X-Request-Id are passed back; cookies and other headers are not."""
        await allow(client, agency, destination.url("/pay"))
        response = await forward(client, agency, destination.url("/pay"), "{}")
        answer = await response.json()
        assert answer["headers"]["content-type"].startswith("application/json")
        assert answer["headers"]["x-request-id"] == "dst-req-0001"
        assert "set-cookie" not in answer["headers"]
        assert "x-internal-secret" not in answer["headers"]

    async def test_form_bodies_are_percent_encoded(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """In a form body a name full of delimiters arrives as exactly that name, in its own field."""
        await allow(client, agency, destination.url("/pay"))
        name = "O'Brien & Sons = {{x}} + 100%"
        token = await tokenize(client, agency, name=name)
        body = f"card={ref(token, 'number', '')}&holder={ref(token, 'name')}&amount=5"
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        response = await forward(client, agency, destination.url("/pay"), body, headers=headers)
        assert response.status == 200, await response.text()
        assert parse_qs(destination.last.text, strict_parsing=True) == {
            "card": [VISA],
            "holder": [name],
            "amount": ["5"],
        }

    async def test_pan_shaped_tokens_can_be_referenced(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """A pan-shaped token id works in a reference like an opaque one."""
        await allow(client, agency, destination.url("/pay"))
        token = await tokenize(client, agency, number=AMEX, cvc=AMEX_CVC, format="pan_shaped")
        assert token.isdigit()
        body = as_json(n=ref(token, "number"), c=ref(token, "cvc"))
        response = await forward(client, agency, destination.url("/pay"), body)
        assert response.status == 200, await response.text()
        assert json.loads(destination.last.text) == {"n": AMEX, "c": AMEX_CVC}

    async def test_hop_by_hop_and_framing_headers_are_stripped(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """Connection-level headers, those Connection names, Host and Content-Length never reach the destination."""
        await allow(client, agency, destination.url("/pay"))
        headers = {
            "Content-Type": "application/json",
            "Authorization": "Basic cHJvY2Vzc29yOmtleQ==",
            "Connection": "X-Drop-Me",
            "X-Drop-Me": "1",
            "Keep-Alive": "timeout=99",
            "Proxy-Authorization": "Basic eDp5",
            "Upgrade": "h2c",
            "TE": "trailers",
            "Host": "evil.example",
            "Content-Length": "1",
        }
        response = await forward(client, agency, destination.url("/pay"), '{"a": 1}', headers=headers)
        assert response.status == 200, await response.text()
        received = {k.lower(): v for k, v in destination.last.headers.items()}
        assert received["authorization"] == "Basic cHJvY2Vzc29yOmtleQ=="
        assert received["host"] == f"localhost:{destination.port}"
        assert received["content-length"] == str(len('{"a": 1}'))
        for name in ("x-drop-me", "keep-alive", "proxy-authorization", "upgrade", "te"):
            assert name not in received, name
        assert received.get("connection", "close").lower() in ("close", "keep-alive")

    async def test_the_destinations_own_status_is_inside_a_200(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """A destination's 402 is reported in the answer's status, not as the vault's status."""
        await allow(client, agency, destination.url("/pay"))
        destination.mode, destination.status = "status", 402
        response = await forward(client, agency, destination.url("/pay"), "{}")
        assert response.status == 200
        assert (await response.json())["status"] == 402


# --- the CVC ------------------------------------------------------------------------------------


class TestCvc:
    async def test_the_first_forward_takes_the_cvc(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """After a forward that used it the CVC is gone: the token says so and a second use is 422 without a call."""
        await allow(client, agency, destination.url("/pay"))
        token = await tokenize(client, agency)
        body = as_json(cvc=ref(token, "cvc"))
        assert (await forward(client, agency, destination.url("/pay"), body)).status == 200
        assert await cvc_retained(client, agency, token) is False
        refused = await problem(await forward(client, agency, destination.url("/pay"), body), 422, "cvc_unavailable")
        assert token in refused["detail"]
        assert destination.calls == 1

    async def test_the_cvc_dies_whatever_the_destination_answers(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """A declined authorization used the CVC too."""
        await allow(client, agency, destination.url("/pay"))
        destination.mode, destination.status = "status", 402
        token = await tokenize(client, agency)
        response = await forward(client, agency, destination.url("/pay"), as_json(cvc=ref(token, "cvc")))
        assert (await response.json())["status"] == 402
        assert await cvc_retained(client, agency, token) is False

    async def test_a_refused_forward_keeps_the_cvc(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """A forward refused before sending (a value that cannot render) does not spend the CVC."""
        await allow(client, agency, destination.url("/pay"))
        token = await tokenize(client, agency, name=None)
        body = as_json(cvc=ref(token, "cvc"), name=ref(token, "name"))
        await problem(await forward(client, agency, destination.url("/pay"), body), 422, "template_value_missing")
        assert await cvc_retained(client, agency, token) is True
        assert destination.calls == 0

    async def test_a_forward_without_cvc_references_leaves_the_cvc(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """Only a .cvc reference takes the CVC."""
        await allow(client, agency, destination.url("/pay"))
        token = await tokenize(client, agency)
        response = await forward(client, agency, destination.url("/pay"), as_json(n=ref(token, "number")))
        assert response.status == 200
        assert await cvc_retained(client, agency, token) is True


# --- tokens the agency does not have ---------------------------------------------------------------


class TestTokenReferences:
    async def test_another_agencys_token_is_not_found_and_nothing_is_sent(
        self, client: Client, agency: AgencyKeys, other_agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """A reference to another agency's token is a 422 naming it, and its CVC is untouched."""
        await allow(client, agency, destination.url("/pay"))
        theirs = await tokenize(client, other_agency)
        response = await forward(client, agency, destination.url("/pay"), as_json(c=ref(theirs, "cvc")))
        body = await problem(response, 422, "template_token_not_found")
        assert theirs in body["detail"]
        assert destination.calls == 0
        assert await cvc_retained(client, other_agency, theirs) is True

    async def test_an_unknown_token_is_not_found(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """A well-formed id that names no token is a 422 naming it."""
        await allow(client, agency, destination.url("/pay"))
        ghost = "tok_" + "A" * 24
        mine = await tokenize(client, agency)
        body = as_json(a=ref(mine, "number"), b=ref(ghost, "number"))
        refused = await problem(
            await forward(client, agency, destination.url("/pay"), body), 422, "template_token_not_found"
        )
        assert ghost in refused["detail"]
        assert destination.calls == 0

    async def test_a_deleted_token_is_not_found(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """Once deleted, a token cannot be forwarded."""
        await allow(client, agency, destination.url("/pay"))
        token = await tokenize(client, agency)
        assert (await client.delete(f"/v1/tokens/{token}", headers=agency.auth)).status == 204
        response = await forward(client, agency, destination.url("/pay"), as_json(n=ref(token, "number")))
        await problem(response, 422, "template_token_not_found")
        assert destination.calls == 0

    @pytest.mark.parametrize(
        "body",
        [
            '{"n": "{{ tok_short.number }}"}',
            '{"n": "{{ %(t)s.pin }}"}',
            '{"n": "{{ %(t)s.number }"}',
            '{"n": "{{ number }}"}',
        ],
    )
    async def test_malformed_references_are_refused(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer, body: str
    ) -> None:
        """Anything in double braces that is not a token reference is a 422, never sent as text."""
        await allow(client, agency, destination.url("/pay"))
        token = await tokenize(client, agency)
        response = await forward(client, agency, destination.url("/pay"), body % {"t": token})
        await problem(response, 422, "template_invalid")
        assert destination.calls == 0


# --- the allowlist and the address rules --------------------------------------------------------------


class TestDestinationRules:
    @pytest.mark.parametrize(
        "url",
        [
            "https://127.0.0.1:{port}/pay",  # another host (same machine)
            "https://localhost:{other}/pay",  # another port
            "https://localhost:{port}/payments",  # outside the prefix
            "https://localhost:{port}/other/pay",
            "https://localhost:{port}/pay/../admin",  # traversal
            "https://localhost:{port}/pay/%2e%2e/admin",  # encoded traversal
            "https://localhost:{port}/pay/%2E%2e/admin",
            "https://localhost:{port}/pay/..%2fadmin",
            "http://localhost:{port}/pay",  # not https
            "https://localhost@127.0.0.1:{port}/pay",  # userinfo trick
            "https://localhost:{port}@127.0.0.1:{port}/pay",
            "https://localhost:{port}\\@127.0.0.1/pay",
            "https://localhost:{port}/pay#frag",
            "https://LOCALHOST:{port}/pay/ x",
        ],
    )
    async def test_destinations_off_the_allowlist_are_refused(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer, url: str
    ) -> None:
        """Anything but https to the exact host and port under the path prefix is 403 and nothing is sent."""
        await allow(client, agency, destination.url("/pay"))
        token = await tokenize(client, agency)
        target = url.format(port=destination.port, other=destination.port + 1)
        response = await forward(client, agency, target, as_json(n=ref(token, "number"), c=ref(token, "cvc")))
        await problem(response, 403, "destination_not_allowed")
        assert destination.calls == 0
        assert await cvc_retained(client, agency, token) is True

    async def test_an_agency_without_an_allowlist_forwards_nowhere(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """No allowlist entry, no forward."""
        await problem(await forward(client, agency, destination.url("/pay"), "{}"), 403, "destination_not_allowed")
        assert destination.calls == 0

    async def test_another_agencys_allowlist_does_not_count(
        self, client: Client, agency: AgencyKeys, other_agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """An allowlist belongs to its agency."""
        await allow(client, other_agency, destination.url("/pay"))
        await problem(await forward(client, agency, destination.url("/pay"), "{}"), 403, "destination_not_allowed")
        assert destination.calls == 0

    async def test_loopback_without_allow_private_is_refused(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """An allowlisted host that resolves to loopback is 403 unless its entry allows private addresses."""
        await allow(client, agency, destination.url("/pay"), allow_private=False)
        token = await tokenize(client, agency)
        response = await forward(client, agency, destination.url("/pay"), as_json(c=ref(token, "cvc")))
        body = await problem(response, 403, "destination_address_forbidden")
        assert "loopback" in body["detail"]
        assert destination.calls == 0
        assert await cvc_retained(client, agency, token) is True

    async def test_a_loopback_literal_entry_without_allow_private_is_refused(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """Even an entry that bypassed the CLI's check (an IP literal, allow_private false) cannot reach loopback."""
        store = client.app[SERVICES].store
        assert store is not None
        entry = Destination(host="127.0.0.1", port=destination.port, path_prefix="/pay", allow_private=False)
        await store.set_agency_fields(agency.id, {"destinations": destinations_to_json((entry,))})
        response = await forward(client, agency, destination.url("/pay", host="127.0.0.1"), "{}")
        await problem(response, 403, "destination_address_forbidden")
        assert destination.calls == 0

    async def test_the_literal_loopback_entry_with_allow_private_works(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """With allow_private an IP-literal destination is reached (the certificate names 127.0.0.1)."""
        await allow(client, agency, destination.url("/pay", host="127.0.0.1"))
        response = await forward(client, agency, destination.url("/pay", host="127.0.0.1"), "{}")
        assert response.status == 200, await response.text()
        assert destination.calls == 1


# --- what the destination answers -------------------------------------------------------------------


class TestAnswers:
    async def test_redirects_are_passed_back_not_followed(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """A 302 comes back with its Location; the vault does not go there."""
        await allow(client, agency, destination.url("/pay"))
        destination.mode = "redirect"
        destination.redirect_to = destination.url("/pay/followed")
        response = await forward(client, agency, destination.url("/pay"), "{}")
        answer = await response.json()
        assert response.status == 200
        assert answer["status"] == 302
        assert answer["headers"]["location"] == destination.url("/pay/followed")
        assert [r.path for r in destination.received] == ["/pay"]

    async def test_a_slow_destination_times_out_quickly(
        self,
        aiohttp_client: Any,
        redis_server: RedisServer,
        tmp_path: Path,
        master_keys: MasterKeys,
        destination: DestinationServer,
    ) -> None:
        """With forward.timeout_seconds 0.5 a destination that does not answer is a 504 within about that time."""
        quick = await app_client(
            aiohttp_client, redis_server, tmp_path, master_keys, ca_file=str(destination.ca_pem), timeout_seconds=0.5
        )
        agency = await create_agency(quick)
        await allow(quick, agency, destination.url("/pay"))
        destination.mode = "slow"
        started = time.monotonic()
        response = await forward(quick, agency, destination.url("/pay"), "{}")
        elapsed = time.monotonic() - started
        await problem(response, 504, "destination_timeout")
        assert elapsed < 3.0
        assert destination.calls == 1

    @pytest.mark.parametrize("mode", ["huge", "huge_chunked"])
    async def test_an_oversized_answer_is_refused(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer, mode: str
    ) -> None:
        """An answer beyond forward.max_response_bytes is a 502, whether or not its length was announced."""
        await allow(client, agency, destination.url("/pay"))
        destination.mode = mode
        response = await forward(client, agency, destination.url("/pay"), "{}")
        await problem(response, 502, "destination_response_too_large")

    async def test_a_compressed_answer_is_refused(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """The vault asks for identity and will not inflate what it cannot bound or scan: 502."""
        await allow(client, agency, destination.url("/pay"))
        destination.mode = "gzip"
        response = await forward(client, agency, destination.url("/pay"), "{}")
        await problem(response, 502, "destination_response_unreadable")
        assert destination.last.headers["Accept-Encoding"] == "identity"

    async def test_card_numbers_in_the_answer_are_redacted(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """Card numbers in the destination's body and passed-back headers come back redacted."""
        await allow(client, agency, destination.url("/pay"))
        destination.mode = "card"
        response = await forward(client, agency, destination.url("/pay"), "{}")
        text = await response.text()
        assert leaks.cards_in_text(text) == []
        answer = json.loads(text)
        assert answer["body"].startswith("approved card [REDACTED CARD ****4242]; on file [REDACTED CARD ****4444]")
        assert answer["body"].endswith("reference 12345")
        assert answer["headers"]["x-request-id"] == "dst-[REDACTED CARD ****4242]"
        assert MASTERCARD[-4:] in answer["body"]


# --- TLS ---------------------------------------------------------------------------------------


class TestTls:
    async def test_an_untrusted_certificate_is_a_502(
        self,
        aiohttp_client: Any,
        redis_server: RedisServer,
        tmp_path: Path,
        master_keys: MasterKeys,
        destination: DestinationServer,
    ) -> None:
        """Without forward.ca_file the test CA is not trusted: 502 destination_unreachable, no request received."""
        strict = await app_client(aiohttp_client, redis_server, tmp_path, master_keys)
        agency = await create_agency(strict)
        await allow(strict, agency, destination.url("/pay"))
        response = await forward(strict, agency, destination.url("/pay"), "{}")
        body = await problem(response, 502, "destination_unreachable")
        assert "TLS" in body["detail"]
        assert destination.calls == 0


# --- who may call, and what they may send ------------------------------------------------------------


class TestRequestRules:
    async def test_a_publishable_key_is_refused(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """Only the secret key may forward."""
        await allow(client, agency, destination.url("/pay"))
        response = await forward(client, agency, destination.url("/pay"), "{}", auth=agency.public_auth)
        await problem(response, 403, "secret_key_required")
        assert destination.calls == 0

    async def test_unknown_fields_are_refused(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """An unknown field is a 422 naming it."""
        await allow(client, agency, destination.url("/pay"))
        payload = {"destination": destination.url("/pay"), "method": "POST", "body": "{}", "follow_redirects": True}
        response = await client.post("/v1/forward", json=payload, headers=agency.auth)
        body = await problem(response, 422, "validation_failed")
        assert {"field": "follow_redirects", "code": "unknown_field", "message": "Unknown field."} in body["errors"]
        assert destination.calls == 0

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"method": "GET"}, "method"),
            ({"method": "post"}, "method"),
            ({"headers": {"X-Bad": "a\r\nInjected: 1"}}, "headers.X-Bad.value"),
            ({"headers": {"Bad Name": "x"}}, "headers.Bad Name.key"),
            ({"headers": {"X-A": "1", "x-a": "2"}}, "headers"),
            ({"body": 5}, "body"),
            ({"destination": None}, "destination"),
        ],
    )
    async def test_invalid_fields_are_refused(
        self,
        client: Client,
        agency: AgencyKeys,
        destination: DestinationServer,
        change: dict[str, Any],
        field: str,
    ) -> None:
        """Methods other than POST, PUT and PATCH, header injection and wrong types are 422s naming the field."""
        await allow(client, agency, destination.url("/pay"))
        payload = {"destination": destination.url("/pay"), "method": "POST", "headers": JSON, "body": "{}", **change}
        response = await client.post("/v1/forward", json=payload, headers=agency.auth)
        body = await problem(response, 422, "validation_failed")
        assert field in {e["field"] for e in body["errors"]}, body["errors"]
        assert destination.calls == 0

    @pytest.mark.parametrize("method", ["PUT", "PATCH"])
    async def test_put_and_patch_are_forwarded(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer, method: str
    ) -> None:
        """The method the agency chose is the method the destination sees."""
        await allow(client, agency, destination.url("/pay"))
        response = await forward(client, agency, destination.url("/pay"), "{}", method=method)
        assert response.status == 200
        assert destination.last.method == method


# --- idempotency ----------------------------------------------------------------------------------


class TestIdempotency:
    async def test_a_retry_replays_the_first_answer_and_sends_nothing(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """Same key, same body: the same bytes and status again, and the destination heard it once."""
        await allow(client, agency, destination.url("/pay"))
        token = await tokenize(client, agency)
        body = FULL_TEMPLATE % {"t": token}
        first = await forward(client, agency, destination.url("/pay"), body, idempotency_key="fwd-retry-1")
        first_bytes = await first.read()
        second = await forward(client, agency, destination.url("/pay"), body, idempotency_key="fwd-retry-1")
        assert second.status == first.status == 200
        assert await second.read() == first_bytes
        assert second.headers["Idempotent-Replayed"] == "true"
        assert destination.calls == 1

    async def test_the_same_key_with_another_body_is_refused(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """Same key, different body: 422 idempotency_key_reused, and no second call."""
        await allow(client, agency, destination.url("/pay"))
        first = await forward(client, agency, destination.url("/pay"), '{"a": 1}', idempotency_key="fwd-reuse-1")
        assert first.status == 200
        second = await forward(client, agency, destination.url("/pay"), '{"a": 2}', idempotency_key="fwd-reuse-1")
        await problem(second, 422, "idempotency_key_reused")
        assert destination.calls == 1

    async def test_a_failure_after_sending_is_replayed_not_retried(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """An oversized answer (the request went out) is the answer every retry gets."""
        await allow(client, agency, destination.url("/pay"))
        destination.mode = "huge"
        first = await forward(client, agency, destination.url("/pay"), "{}", idempotency_key="fwd-fail-1")
        await problem(first, 502, "destination_response_too_large")
        destination.mode = "echo"
        second = await forward(client, agency, destination.url("/pay"), "{}", idempotency_key="fwd-fail-1")
        assert second.status == 502
        assert await second.read() == await first.read()
        assert destination.calls == 1

    async def test_a_refusal_before_sending_frees_the_key(
        self, client: Client, agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """A forward refused before anything changed can be retried with the same key once fixed."""
        first = await forward(client, agency, destination.url("/pay"), "{}", idempotency_key="fwd-free-1")
        await problem(first, 403, "destination_not_allowed")
        await allow(client, agency, destination.url("/pay"))
        second = await forward(client, agency, destination.url("/pay"), "{}", idempotency_key="fwd-free-1")
        assert second.status == 200
        assert destination.calls == 1
