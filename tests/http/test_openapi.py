"""openapi.yaml is a valid OpenAPI 3.1 document, matches the routes, and real answers conform to it.

The conformance tests drive the in-process app (real Redis) through every
operation and every status the document lists, and validate each real
request/response pair with openapi-core (see ``tests.support.openapi_check``).
Each test declares with ``@covers`` exactly which (operation, status) pairs,
problem codes and field codes it provokes; ``TestCoverageDeclarations`` proves
the declarations together cover the whole document.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from service.adapters import crypto
from service.adapters.keyring import MasterKey, MasterKeys
from service.adapters.store import agency_key, token_key
from service.domain.cards import luhn_check_digit
from service.http.state import SERVICES
from tests.conftest import AgencyKeys, create_agency, create_app, make_settings
from tests.support.cards import CVC, VISA
from tests.support.openapi_check import (
    PROBLEM_JSON,
    SPEC_PATH,
    UNROUTED,
    Contract,
    Covered,
    covers,
    declarations,
    documented_statuses,
    enum_of,
    load_spec,
    openapi,
    operations,
    pointer,
    resolve,
    schema_validator,
)
from tests.support.redis_server import RedisServer

# Invalid card numbers are derived at run time, so no card-like literal but the public test card exists here.
LUHN_FAILING = VISA[:-1] + str((int(VISA[-1]) + 1) % 10)
UNSUPPORTED_BRAND = "9" * 15 + luhn_check_digit("9" * 15)
SHOP = "https://shop.example.gov"
PUBLISHABLE_OPERATIONS = {
    ("/v1/tokens", "post"),
    ("/v1/checkout/sessions/{session_id}", "get"),
    ("/v1/checkout/sessions/{session_id}/complete", "post"),
}


@pytest.fixture
def contract(client: TestClient[Any, Any], request: pytest.FixtureRequest) -> Contract:
    """A contract checker bound to the session app, expecting what the test declares with @covers."""
    return Contract(client, expected=getattr(request.function, "contract_covers", None))


def card(**changes: Any) -> dict[str, Any]:
    return {"number": VISA, "exp_month": 12, "exp_year": 2031, "cvc": CVC, **changes}


async def create(contract: Contract, agency: AgencyKeys, **body: Any) -> dict[str, Any]:
    exchange = await contract.call("POST", "/v1/tokens", status=201, json={"card": card(), **body}, headers=agency.auth)
    token: dict[str, Any] = exchange.json()
    return token


async def app_client(aiohttp_client: Any, redis_url: str, data_dir: Path, keys: MasterKeys) -> TestClient[Any, Any]:
    app = create_app(make_settings(redis_url, data_dir), keys, redis_url=redis_url, tls=False)
    started: TestClient[Any, Any] = await aiohttp_client(app)
    return started


def fresh_master_keys(*previous: MasterKeys) -> MasterKeys:
    return MasterKeys(MasterKey(crypto.random_key(), source="tests"), tuple(k.current for k in previous))


# --- the document itself ---------------------------------------------------------------


def example_checks() -> Iterator[tuple[str, Any, str]]:
    """(schema pointer, example value, example pointer) for every example in the document."""

    def walk(node: Any, path: tuple[str, ...]) -> Iterator[tuple[str, Any, str]]:
        if isinstance(node, dict):
            if isinstance(node.get("schema"), dict):
                schema_at = pointer(*path, "schema")
                if "example" in node:
                    yield schema_at, node["example"], pointer(*path, "example")
                for name, example in (node.get("examples") or {}).items():
                    yield schema_at, resolve(example)["value"], pointer(*path, "examples", name)
            elif isinstance(node.get("examples"), list) and path[:2] == ("components", "schemas"):
                for index, example in enumerate(node["examples"]):
                    yield pointer(*path), example, pointer(*path, "examples", str(index))
            for key, value in node.items():
                yield from walk(value, (*path, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from walk(value, (*path, str(index)))

    return walk(load_spec(), ())


def problem_responses() -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, response) for every problem+json response (not 402's charge, not HEAD's nothing), resolved."""
    for template, method, operation in operations():
        for status, response in operation["responses"].items():
            response = resolve(response)
            if int(status) >= 400 and PROBLEM_JSON in response.get("content", {}):
                yield f"{method.upper()} {template} {status}", response


def code_status_pairs_of(response: dict[str, Any]) -> set[tuple[str, int]]:
    """The (code, status) pairs a problem response's schema allows."""
    refinement = response["content"]["application/problem+json"]["schema"]["allOf"][1]["properties"]
    codes = refinement["code"].get("enum") or [refinement["code"]["const"]]
    return {(code, refinement["status"]["const"]) for code in codes}


class TestDocument:
    def test_document_is_valid_openapi_3_1(self) -> None:
        """openapi.yaml passes openapi-spec-validator as an OpenAPI 3.1.0 document and loads in openapi-core."""
        spec = load_spec()
        assert spec["openapi"] == "3.1.0"
        validate(spec, cls=OpenAPIV31SpecValidator)
        assert str(openapi().version) == "OpenAPIV3.1"

    def test_examples_conform_to_their_schemas(self) -> None:
        """Every example in the document validates against the schema it illustrates."""
        checked = 0
        for schema_at, value, example_at in example_checks():
            errors = [e.message for e in schema_validator(schema_at).iter_errors(value)]
            assert not errors, f"{example_at} does not match {schema_at}: {errors}"
            checked += 1
        assert checked >= 20

    def test_only_the_public_test_card_appears(self) -> None:
        """The only card-like digit run anywhere in the document is the public test card."""
        source = SPEC_PATH.read_text(encoding="utf-8")
        runs = [re.sub(r"[ .-]", "", m.group()) for m in re.finditer(r"[0-9](?:[ .-]?[0-9]){11,}", source)]
        assert runs, "the examples use the public test card"
        assert set(runs) == {VISA}

    def test_every_response_is_explicit_and_identified(self) -> None:
        """Operations list explicit statuses only, each answer has X-Request-Id, errors but 402 are problem+json."""
        for template, method, operation in operations():
            for status, response in operation["responses"].items():
                where = f"{method.upper()} {template} {status}"
                assert re.fullmatch(r"[1-5][0-9][0-9]", status), f"{where}: no ranges or default"
                response = resolve(response)
                assert resolve(response["headers"]["X-Request-Id"])["required"] is True, where
                content = response.get("content", {})
                if method == "head" or status == "204":
                    assert not content, f"{where}: no body"
                elif int(status) >= 400 and status != "402":
                    assert list(content) == [PROBLEM_JSON], where
                elif template.startswith("/elements/"):  # the hosted card form and its scripts
                    assert [media.split("/")[0] for media in content] == ["text"], where
                else:
                    assert list(content) == ["application/json"], where

    def test_every_state_changing_post_is_idempotent(self) -> None:
        """Every POST takes Idempotency-Key and lists its 400, 409 and 422 answers, and its 2xx may be replayed."""
        posts = [(template, op) for template, method, op in operations() if method == "post"]
        assert {template for template, _ in posts} >= {"/v1/tokens", "/v1/charges", "/v1/forward"}
        for template, operation in posts:
            where = f"POST {template}"
            assert {"$ref": "#/components/parameters/IdempotencyKey"} in operation["parameters"], where
            allowed = set().union(
                *(code_status_pairs_of(resolve(operation["responses"][status])) for status in ("400", "409", "422"))
            )
            assert {
                ("idempotency_key_invalid", 400),
                ("idempotency_request_in_progress", 409),
                ("idempotency_key_reused", 422),
            } <= allowed, where
            for status, response in operation["responses"].items():
                if status.startswith("2") or status == "402":
                    assert "Idempotent-Replayed" in resolve(response)["headers"], f"{where} {status}"

    def test_code_tables_match_the_schemas(self) -> None:
        """The description's code tables list exactly the enums, with the statuses the responses use."""
        description = load_spec()["info"]["description"]
        problems_part, fields_part = description.split("Field codes", 1)
        table = {
            (m.group(1), int(m.group(2)))
            for m in re.finditer(r"^\| `([a-z_]+)` \| ([0-9]{3}) \|", problems_part, re.MULTILINE)
        }
        assert {code for code, _ in table} == enum_of("ProblemCode")
        responses = [r for _, r in problem_responses()]
        responses += [resolve({"$ref": "#/components/responses/" + name}) for name in ("NotFound", "MethodNotAllowed")]
        assert table == set().union(*(code_status_pairs_of(r) for r in responses))
        field_codes = set(re.findall(r"^\| `([a-z_]+)` \|", fields_part, re.MULTILINE))
        assert field_codes == enum_of("FieldErrorCode")

    def test_security_matches_the_key_kinds(self) -> None:
        """Publishable keys: POST /v1/tokens and checkout payment; health and /elements need none; else secret."""
        spec = load_spec()
        assert spec["security"] == [{"secretKey": []}]
        for template, method, operation in operations():
            security = operation.get("security", spec["security"])
            if template in ("/healthz", "/readyz") or template.startswith("/elements/"):
                assert security == [], template
            elif (template, method) in PUBLISHABLE_OPERATIONS:
                assert security == [{"secretKey": []}, {"publishableKey": []}]
            else:
                assert security == [{"secretKey": []}], f"{method} {template}"


class TestRouteDrift:
    @staticmethod
    def app_routes(master_keys: MasterKeys, tmp_path: Path) -> set[tuple[str, str]]:
        settings = make_settings("redis://127.0.0.1:1/0", tmp_path / "var")
        app = create_app(settings, master_keys, redis_url="redis://127.0.0.1:1/0", tls=False)
        return {
            (route.method.lower(), route.resource.canonical)
            for route in app.router.routes()
            if route.resource and not route.resource.canonical.startswith("/staff/")  # HTML pages, not API operations
        }

    @staticmethod
    def documented_routes() -> set[tuple[str, str]]:
        return {(method, template) for template, method, _ in operations()}

    async def test_every_app_route_is_documented(self, master_keys: MasterKeys, tmp_path: Path) -> None:
        """Every method and path registered on create_app's router is an operation in the document."""
        undocumented = self.app_routes(master_keys, tmp_path) - self.documented_routes()
        assert not undocumented, f"routes missing from openapi.yaml: {sorted(undocumented)}"

    async def test_every_documented_operation_is_routed(self, master_keys: MasterKeys, tmp_path: Path) -> None:
        """Every operation in the document is registered on create_app's router."""
        unrouted = self.documented_routes() - self.app_routes(master_keys, tmp_path)
        assert not unrouted, f"documented but not served: {sorted(unrouted)}"


# --- real answers conform ----------------------------------------------------------------


class TestHealthConformance:
    @covers(("getHealth", 200), ("headHealth", 200), ("getReadiness", 200), ("headReadiness", 200))
    async def test_health_and_readiness_conform(self, contract: Contract) -> None:
        """GET and HEAD of /healthz and /readyz answer 200 as documented while Redis is up."""
        assert (await contract.call("GET", "/healthz", status=200)).json() == {"status": "ok"}
        assert (await contract.call("HEAD", "/healthz", status=200)).data == b""
        ready = await contract.call("GET", "/readyz", status=200)
        assert ready.json()["checks"] == {"keys": "ok", "redis": "ok", "durability": "ok"}
        assert ready.json()["durability"]["contract"] == "fsync"
        await contract.call("HEAD", "/readyz", status=200)
        contract.assert_covered()

    @covers(("getHealth", 200), ("createToken", 401), codes={"missing_api_key"})
    async def test_request_id_is_echoed_or_minted(self, contract: Contract) -> None:
        """A well-formed inbound X-Request-Id is echoed (also as request_id); malformed or card-like ones are not."""
        echoed = await contract.call("GET", "/healthz", status=200, headers={"X-Request-Id": "proxy-7f3a-0042"})
        assert echoed.headers["X-Request-Id"] == "proxy-7f3a-0042"
        for unusable in ("bad id!", VISA):
            minted = await contract.call("GET", "/healthz", status=200, headers={"X-Request-Id": unusable})
            assert re.fullmatch(r"req_[0-9a-f]{24}", minted.headers["X-Request-Id"])
        refused = await contract.call(
            "POST",
            "/v1/tokens",
            status=401,
            json={"card": card()},
            headers={"X-Request-Id": "proxy-7f3a-0043"},
            conforms=False,
        )
        assert refused.json()["request_id"] == "proxy-7f3a-0043"
        contract.assert_covered()


class TestCreateConformance:
    @covers(("createToken", 201), ("createToken", 200))
    async def test_created_and_deduplicated_tokens_conform(self, contract: Contract, agency: AgencyKeys) -> None:
        """New tokens answer 201 with Location, deduplicated ones 200 with the existing token, for both key kinds."""
        first = await contract.call("POST", "/v1/tokens", status=201, json={"card": card()}, headers=agency.auth)
        token = first.json()
        assert first.headers["Location"] == f"/v1/tokens/{token['id']}"
        assert (token["card"]["last4"], token["card"]["bin"], token["cvc_retained"]) == ("4242", "424242", True)
        everything = {
            "card": card(number="4242 4242 4242 4242", name="A. Shopper", postal_code="40601"),
            "metadata": {"order": "FL-2026-0042"},
            "format": "opaque",
            "expires_at": int(time.time()) + 86400,
            "deduplicate": False,
        }
        second = (await contract.call("POST", "/v1/tokens", status=201, json=everything, headers=agency.auth)).json()
        assert second["metadata"] == {"order": "FL-2026-0042"}
        assert second["card"]["fingerprint"] == token["card"]["fingerprint"]

        again = await contract.call(
            "POST", "/v1/tokens", status=200, json={"card": card(cvc=None), "deduplicate": True}, headers=agency.auth
        )
        assert again.json()["id"] in {token["id"], second["id"]}
        assert "Location" not in again.headers

        pan = await contract.call(
            "POST",
            "/v1/tokens",
            status=201,
            json={"card": card(number="4242-4242-4242-4242", exp_year=31, cvc=None), "format": "pan_shaped"},
            headers=agency.auth,
        )
        pan_id = pan.json()["id"]
        assert (pan.json()["format"], len(pan_id), pan_id[-4:]) == ("pan_shaped", 16, "4242")
        same_pan = await contract.call(
            "POST",
            "/v1/tokens",
            status=200,
            json={"card": card(), "format": "pan_shaped", "deduplicate": True},
            headers=agency.auth,
        )
        assert same_pan.json()["id"] == pan_id

        await contract.call("POST", "/v1/tokens", status=201, json={"card": card()}, headers=agency.public_auth)
        await contract.call(
            "POST", "/v1/tokens", status=201, json={"card": card()}, headers={**agency.public_auth, "Origin": SHOP}
        )
        contract.assert_covered()

    @covers(
        ("createToken", 401), ("createToken", 403), codes={"missing_api_key", "invalid_api_key", "origin_not_allowed"}
    )
    async def test_key_refusals_conform(self, contract: Contract, agency: AgencyKeys) -> None:
        """Missing and unknown keys answer 401 with WWW-Authenticate; a foreign Origin with a publishable key 403."""
        body = {"card": card()}
        missing = await contract.call("POST", "/v1/tokens", status=401, json=body, conforms=False)
        assert missing.problem_code == "missing_api_key"
        assert missing.headers["WWW-Authenticate"] == 'Bearer realm="cardvault"'
        basic = await contract.call(
            "POST", "/v1/tokens", status=401, json=body, headers={"Authorization": "Basic Y2FyZHZhdWx0"}, conforms=False
        )
        assert basic.problem_code == "missing_api_key"
        unknown = await contract.call(
            "POST", "/v1/tokens", status=401, json=body, headers={"Authorization": "Bearer sk_" + "x" * 43}
        )
        assert unknown.problem_code == "invalid_api_key"
        foreign = await contract.call(
            "POST",
            "/v1/tokens",
            status=403,
            json=body,
            headers={**agency.public_auth, "Origin": "https://elsewhere.example.com"},
        )
        assert foreign.problem_code == "origin_not_allowed"
        contract.assert_covered()

    @covers(
        ("createToken", 400),
        ("createToken", 413),
        ("createToken", 415),
        codes={"malformed_request", "payload_too_large", "unsupported_media_type"},
    )
    async def test_unreadable_bodies_conform(self, contract: Contract, agency: AgencyKeys) -> None:
        """Wrong media types answer 415, oversized bodies 413 and unreadable JSON 400, all as problem+json."""
        good = f'{{"card": {{"number": "{VISA}", "exp_month": 12, "exp_year": 2031}}}}'.encode()
        for content_type, conforms in [
            ("text/plain", False),
            ("application/problem+json", False),
            ("application/json; charset=latin-1", True),
        ]:
            headers = {**agency.auth, "Content-Type": content_type}
            await contract.call("POST", "/v1/tokens", status=415, body=good, headers=headers, conforms=conforms)
        await contract.call("POST", "/v1/tokens", status=415, body=good, headers=agency.auth, conforms=False)

        huge = {"card": card(), "metadata": {"note": "x" * 40_000}}
        await contract.call("POST", "/v1/tokens", status=413, json=huge, headers=agency.auth, conforms=False)

        nested: Any = "deep"
        for _ in range(9):
            nested = {"n": nested}
        json_headers = {**agency.auth, "Content-Type": "application/json"}
        repeated = b'{"card": ' + good[9:-1] + b', "card": ' + good[9:-1] + b"}"
        for raw, conforms in [
            (b'{"card": ', False),
            (b"[]", False),
            (b'{"card": NaN}', False),
            (b"\xff\xfe{}", False),
            (repeated, True),
        ]:
            await contract.call("POST", "/v1/tokens", status=400, body=raw, headers=json_headers, conforms=conforms)
        await contract.call(
            "POST",
            "/v1/tokens",
            status=400,
            json={"card": card(), "metadata": nested},
            headers=agency.auth,
            conforms=False,
        )
        contract.assert_covered()

    @covers(
        ("createToken", 422),
        codes={"validation_failed"},
        field_codes={
            "card_number_format",
            "card_number_length",
            "card_number_luhn",
            "card_brand_unsupported",
            "card_expired",
            "card_expiry_invalid",
            "card_cvc_invalid",
            "expires_at_invalid",
            "unknown_field",
            "required",
            "invalid",
        },
    )
    async def test_invalid_fields_conform(self, contract: Contract, agency: AgencyKeys) -> None:
        """Each kind of invalid field answers 422 naming the field and its code, and nothing is echoed."""
        cases: list[tuple[dict[str, Any], set[tuple[str, str]], bool]] = [
            ({"card": card(number="4242 abcd 4242")}, {("card.number", "card_number_format")}, False),
            ({"card": card(number=VISA[:11])}, {("card.number", "card_number_length")}, False),
            ({"card": card(number=LUHN_FAILING)}, {("card.number", "card_number_luhn")}, True),
            ({"card": card(number=UNSUPPORTED_BRAND)}, {("card.number", "card_brand_unsupported")}, True),
            ({"card": card(exp_month=1, exp_year=2020)}, {("card.exp_year", "card_expired")}, True),
            ({"card": card(exp_month=13)}, {("card.exp_month", "card_expiry_invalid")}, False),
            ({"card": card(exp_year=1999)}, {("card.exp_year", "card_expiry_invalid")}, False),
            ({"card": card(cvc="12")}, {("card.cvc", "card_cvc_invalid")}, False),
            ({"card": card(cvc="7373")}, {("card.cvc", "card_cvc_invalid")}, True),
            ({"card": card(), "expires_at": 1}, {("expires_at", "expires_at_invalid")}, True),
            ({"card": card(), "colour": "blue"}, {("colour", "unknown_field")}, False),
            ({"card": card(pin="1234")}, {("card.pin", "unknown_field")}, False),
            ({}, {("card", "required")}, False),
            ({"card": {"number": VISA}}, {("card.exp_month", "required"), ("card.exp_year", "required")}, False),
            ({"card": card(exp_month="12")}, {("card.exp_month", "invalid")}, False),
            ({"card": card(exp_month=12.0)}, {("card.exp_month", "invalid")}, True),
            ({"card": card(name=f"Pat {VISA}")}, {("card.name", "invalid")}, True),
            ({"card": card(postal_code="_40601")}, {("card.postal_code", "invalid")}, False),
            ({"card": card(postal_code=VISA)}, {("card.postal_code", "invalid")}, True),
            ({"card": card(), "metadata": {"note": "4242 4242 4242 4242"}}, {("metadata.note.value", "invalid")}, True),
            ({"card": card(), "metadata": {f"k{i}": "v" for i in range(21)}}, {("metadata", "invalid")}, False),
            ({"card": card(), "metadata": {"k": "v" * 501}}, {("metadata.k.value", "invalid")}, False),
            ({"card": card(), "format": "plain"}, {("format", "invalid")}, False),
            ({"card": card(), "deduplicate": "yes"}, {("deduplicate", "invalid")}, False),
            ({"card": card(), "deduplicate": 1}, {("deduplicate", "invalid")}, False),
            ({"card": card(), "expires_at": -1}, {("expires_at", "invalid")}, False),
            (
                {"card": card(number=LUHN_FAILING, exp_month=13)},
                {("card.number", "card_number_luhn"), ("card.exp_month", "card_expiry_invalid")},
                False,
            ),
        ]
        for body, expected, conforms in cases:
            exchange = await contract.call(
                "POST", "/v1/tokens", status=422, json=body, headers=agency.auth, conforms=conforms
            )
            assert set(exchange.field_errors) == expected, (expected, exchange.field_errors)
        contract.assert_covered()


class TestTokenConformance:
    @covers(
        ("createToken", 201),
        ("getToken", 200),
        ("listTokens", 200),
        ("deleteToken", 204),
        ("getToken", 404),
        ("deleteToken", 404),
        codes={"token_not_found"},
    )
    async def test_lookup_listing_and_deletion_conform(self, contract: Contract, agency: AgencyKeys) -> None:
        """A token reads back (200), lists by fingerprint (200), deletes (204) and then answers 404."""
        token = await create(contract, agency, metadata={"order": "FL-2026-0042"})
        path = f"/v1/tokens/{token['id']}"
        assert (await contract.call("GET", path, status=200, headers=agency.auth)).json() == token
        fingerprint = {"fingerprint": token["card"]["fingerprint"]}
        listed = await contract.call("GET", "/v1/tokens", status=200, params=fingerprint, headers=agency.auth)
        assert token["id"] in [t["id"] for t in listed.json()["data"]]
        deleted = await contract.call("DELETE", path, status=204, headers=agency.auth)
        assert deleted.data == b""
        await contract.call("GET", path, status=404, headers=agency.auth)
        await contract.call("DELETE", path, status=404, headers=agency.auth)
        after = await contract.call("GET", "/v1/tokens", status=200, params=fingerprint, headers=agency.auth)
        assert token["id"] not in [t["id"] for t in after.json()["data"]]
        contract.assert_covered()

    @covers(
        ("createToken", 201),
        ("getToken", 401),
        ("getToken", 403),
        ("getToken", 404),
        ("deleteToken", 401),
        ("deleteToken", 403),
        ("deleteToken", 404),
        ("listTokens", 200),
        ("listTokens", 401),
        ("listTokens", 403),
        ("listTokens", 422),
        codes={"missing_api_key", "invalid_api_key", "secret_key_required", "token_not_found", "validation_failed"},
        field_codes={"required", "invalid", "unknown_field"},
    )
    async def test_secret_key_operations_refuse_as_documented(
        self, contract: Contract, agency: AgencyKeys, other_agency: AgencyKeys
    ) -> None:
        """Reads and deletes refuse missing keys (401), publishable keys (403) and other agencies' tokens (404)."""
        token = await create(contract, agency)
        path = f"/v1/tokens/{token['id']}"
        fingerprint = {"fingerprint": token["card"]["fingerprint"]}
        unknown_key = {"Authorization": "Bearer sk_" + "x" * 43}
        for method, target, params in [("GET", path, None), ("DELETE", path, None), ("GET", "/v1/tokens", fingerprint)]:
            await contract.call(method, target, status=401, params=params, conforms=False)
            await contract.call(method, target, status=401, params=params, headers=unknown_key)
            refused = await contract.call(method, target, status=403, params=params, headers=agency.public_auth)
            assert refused.problem_code == "secret_key_required"
        await contract.call("GET", path, status=404, headers=other_agency.auth)
        await contract.call("DELETE", path, status=404, headers=other_agency.auth)
        await contract.call("GET", "/v1/tokens/not-a-token", status=404, headers=agency.auth)
        foreign = await contract.call("GET", "/v1/tokens", status=200, params=fingerprint, headers=other_agency.auth)
        assert foreign.json() == {"object": "list", "data": [], "has_more": False}

        for params, expected, conforms in [
            (None, ("fingerprint", "required"), False),
            ({"fingerprint": "XYZ"}, ("fingerprint", "invalid"), False),
            ({**fingerprint, "limit": "5"}, ("limit", "unknown_field"), True),
        ]:
            exchange = await contract.call(
                "GET", "/v1/tokens", status=422, params=params, headers=agency.auth, conforms=conforms
            )
            assert exchange.field_errors == [expected]
        contract.assert_covered()


class TestServerFailureConformance:
    @covers(
        ("createToken", 201),
        ("createToken", 500),
        ("getToken", 500),
        ("listTokens", 500),
        ("deleteToken", 204),
        ("deleteToken", 500),
        ("getToken", 404),
        codes={"integrity_error", "token_not_found"},
    )
    async def test_data_failing_authentication_answers_integrity_error(
        self, contract: Contract, agency: AgencyKeys, redis_server: RedisServer
    ) -> None:
        """Ciphertexts moved between tokens, or corrupted agency keys, answer 500 integrity_error as documented."""
        first, second = await create(contract, agency), await create(contract, agency)
        redis = redis_server.client()
        first_key, second_key = token_key(agency.id, first["id"]), token_key(agency.id, second["id"])
        first_blob, second_blob = redis.get(first_key), redis.get(second_key)
        redis.set(first_key, second_blob, keepttl=True)
        redis.set(second_key, first_blob, keepttl=True)

        dedup = {"card": card(cvc=None), "deduplicate": True}
        await contract.call("POST", "/v1/tokens", status=500, json=dedup, headers=agency.auth)
        await contract.call("GET", f"/v1/tokens/{first['id']}", status=500, headers=agency.auth)
        params = {"fingerprint": first["card"]["fingerprint"]}
        await contract.call("GET", "/v1/tokens", status=500, params=params, headers=agency.auth)
        await contract.call("DELETE", f"/v1/tokens/{first['id']}", status=204, headers=agency.auth)
        await contract.call("GET", f"/v1/tokens/{first['id']}", status=404, headers=agency.auth)

        wrapped = bytearray(redis.hget(agency_key(agency.id), "dk:1"))
        wrapped[-1] ^= 0x01
        redis.hset(agency_key(agency.id), "dk:1", bytes(wrapped))
        failed = await contract.call("DELETE", f"/v1/tokens/{second['id']}", status=500, headers=agency.auth)
        assert failed.problem_code == "integrity_error"
        assert redis.exists(second_key)
        contract.assert_covered()

    @covers(("createToken", 201), ("getToken", 500), codes={"internal_error"})
    async def test_unexpected_failures_answer_internal_error(
        self,
        contract: Contract,
        agency: AgencyKeys,
        client: TestClient[Any, Any],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """An unexpected exception answers 500 internal_error without echoing its message."""
        token = await create(contract, agency)
        vault = client.app[SERVICES].vault

        async def broken(*_: Any) -> None:
            raise RuntimeError("simulated defect qz7x")

        monkeypatch.setattr(vault, "get", broken)
        failed = await contract.call("GET", f"/v1/tokens/{token['id']}", status=500, headers=agency.auth)
        assert failed.problem_code == "internal_error"
        assert b"qz7x" not in failed.data
        contract.assert_covered()

    @covers(
        ("createToken", 201),
        ("createToken", 503),
        ("getToken", 503),
        ("listTokens", 503),
        ("deleteToken", 503),
        ("getReadiness", 503),
        ("headReadiness", 503),
        ("getHealth", 200),
        codes={"store_unavailable", "not_ready"},
    )
    async def test_stopped_redis_answers_store_unavailable(
        self,
        contract: Contract,
        aiohttp_client: Any,
        fresh_redis: RedisServer,
        master_keys: MasterKeys,
        tmp_path: Path,
    ) -> None:
        """With its Redis killed the app answers 503 store_unavailable with Retry-After, and /readyz not_ready."""
        app = await app_client(aiohttp_client, fresh_redis.url, tmp_path / "var", master_keys)
        on_app = contract.using(app)
        agency = await create_agency(app)
        token = await create(on_app, agency)
        path = f"/v1/tokens/{token['id']}"
        fresh_redis.kill()
        try:
            for method, target, params, body in [
                ("POST", "/v1/tokens", None, {"card": card()}),
                ("GET", path, None, None),
                ("GET", "/v1/tokens", {"fingerprint": token["card"]["fingerprint"]}, None),
                ("DELETE", path, None, None),
            ]:
                down = await on_app.call(method, target, status=503, params=params, json=body, headers=agency.auth)
                assert (down.problem_code, down.headers["Retry-After"]) == ("store_unavailable", "1")
            not_ready = await on_app.call("GET", "/readyz", status=503)
            assert not_ready.json()["detail"] == "redis: unreachable"
            await on_app.call("HEAD", "/readyz", status=503)
            await on_app.call("GET", "/healthz", status=200)
        finally:
            fresh_redis.restart_same_port()  # the fixture scans it for card data afterwards
        contract.assert_covered()

    @covers(("createToken", 503), ("getReadiness", 503), codes={"store_unavailable", "not_ready"})
    async def test_app_started_without_redis_is_not_ready(
        self, contract: Contract, aiohttp_client: Any, master_keys: MasterKeys, tmp_path: Path
    ) -> None:
        """An app whose Redis never answered reports not_ready and answers the API with 503 store_unavailable."""
        nowhere = f"unix://{tmp_path / 'no-redis-here.sock'}"
        app = await app_client(aiohttp_client, nowhere, tmp_path / "var", master_keys)
        on_app = contract.using(app)
        not_ready = await on_app.call("GET", "/readyz", status=503)
        assert not_ready.json()["detail"] == "keys: not loaded, redis: not connected"
        headers = {"Authorization": "Bearer sk_" + "x" * 43}
        down = await on_app.call("POST", "/v1/tokens", status=503, json={"card": card()}, headers=headers)
        assert down.headers["Retry-After"] == "1"
        contract.assert_covered()

    @covers(("createToken", 201), ("createToken", 503), ("getToken", 503), codes={"keys_unavailable"})
    async def test_keys_under_an_unloaded_master_key_answer_keys_unavailable(
        self, contract: Contract, aiohttp_client: Any, fresh_redis: RedisServer, tmp_path: Path
    ) -> None:
        """A process without the master key an agency's keys are wrapped under answers 503 keys_unavailable."""
        old = fresh_master_keys()
        old_app = await app_client(aiohttp_client, fresh_redis.url, tmp_path / "old", old)
        new_app = await app_client(aiohttp_client, fresh_redis.url, tmp_path / "new", fresh_master_keys(old))
        agency = await create_agency(new_app)
        token = await create(contract.using(new_app), agency)
        on_old = contract.using(old_app)
        down = await on_old.call("POST", "/v1/tokens", status=503, json={"card": card()}, headers=agency.auth)
        assert "Retry-After" not in down.headers
        await on_old.call("GET", f"/v1/tokens/{token['id']}", status=503, headers=agency.auth)
        contract.assert_covered()


class TestUnroutedConformance:
    @covers((UNROUTED, 404), (UNROUTED, 405), codes={"not_found", "method_not_allowed"})
    async def test_unlisted_paths_and_methods_answer_documented_problems(self, contract: Contract) -> None:
        """Unlisted paths answer the NotFound response, unlisted methods the MethodNotAllowed one with Allow."""
        await contract.call_unrouted("GET", "/v1/nope", status=404)
        await contract.call_unrouted("GET", "/v1/tokens/tok_Q2FyZHZhdWx0RXhhbXBsZUlk/card", status=404)
        allowed = {
            ("PUT", "/v1/tokens"): "GET,POST",
            ("OPTIONS", "/v1/tokens"): "GET,POST",
            ("HEAD", "/v1/tokens"): "GET,POST",
            ("PATCH", "/v1/tokens/tok_Q2FyZHZhdWx0RXhhbXBsZUlk"): "DELETE,GET",
            ("POST", "/healthz"): "GET,HEAD",
        }
        for (method, path), allow in allowed.items():
            exchange = await contract.call_unrouted(method, path, status=405)
            assert set(exchange.headers["Allow"].split(",")) == set(allow.split(","))
        contract.assert_covered()

    @covers((UNROUTED, 400), codes={"malformed_request"})
    async def test_bytes_that_are_not_http_answer_malformed_request(self, contract: Contract) -> None:
        """Requests aiohttp cannot parse answer the MalformedRequest response, echo nothing, and close."""
        for raw in [
            b"GET /" + b"q" * 9000 + b" HTTP/1.1\r\nHost: vault\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: vault\r\nX-Big: " + b"w" * 9000 + b"\r\n\r\n",
            b"NOT HTTP AT ALL\r\n\r\n",
        ]:
            exchange = await contract.call_raw(raw, status=400)
            assert b"qqqq" not in exchange.data
            assert b"wwww" not in exchange.data
        contract.assert_covered()


# --- the conformance tests cover the whole document ---------------------------------------


def declared() -> list[Covered]:
    """The @covers declarations of every contract test module: this one and its siblings test_openapi_*.py."""
    names = sorted(path.stem for path in Path(__file__).parent.glob("test_openapi*.py"))
    assert "test_openapi_payments" in names
    return declarations(*(importlib.import_module(f"{__package__}.{name}") for name in names))


class TestCoverageDeclarations:
    def test_every_documented_status_is_provoked(self) -> None:
        """Together the conformance tests provoke every (operation, status) the document lists, and no other."""
        provoked = set().union(*(c.statuses for c in declared()))
        assert provoked == documented_statuses() | {(UNROUTED, 400), (UNROUTED, 404), (UNROUTED, 405)}

    def test_every_problem_code_is_provoked(self) -> None:
        """Together the conformance tests provoke every problem code in the document."""
        assert set().union(*(c.codes for c in declared())) == enum_of("ProblemCode")

    def test_every_field_code_is_provoked(self) -> None:
        """Together the conformance tests provoke every field error code in the document."""
        assert set().union(*(c.field_codes for c in declared())) == enum_of("FieldErrorCode")
