"""Charges: the card goes from the vault straight to the processor, and the agency sees only results."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from service.adapters.charges_store import charge_key
from service.adapters.redis_base import cvc_key, token_key
from service.agency_settings import AgencySettingsService
from service.charges import charge_id_for
from service.domain.processing import ProcessorName
from service.http.state import SERVICES
from tests.conftest import AgencyKeys, FakeClock, create_agency
from tests.http.charge_fixtures import Client, charge, tokenize
from tests.support import leaks
from tests.support.cards import AMEX, AMEX_CVC, CVC, MASTERCARD, VISA
from tests.support.fake_authorize_net import FakeAuthorizeNet
from tests.support.keys import agency_data_keys
from tests.support.redis_server import RedisServer
from tests.support.staff_pages import DAY, move_to_morning

CHARGE_KEYS = {
    "id",
    "object",
    "status",
    "amount",
    "amount_captured",
    "amount_refunded",
    "currency",
    "token",
    "channel",
    "description",
    "order_reference",
    "decline_code",
    "failure_message",
    "processor",
    "card",
    "refunds",
    "history",
    "created",
}


def assert_charge_shape(body: dict[str, Any]) -> None:
    assert set(body) == CHARGE_KEYS
    assert body["object"] == "charge"
    assert body["id"].startswith("ch_")
    assert set(body["processor"]) == {"name", "transaction_id", "auth_code", "avs_result", "cvc_check"}
    assert set(body["card"]) == {"brand", "last4"}
    assert not leaks.cards_in_text(json.dumps(body))


class TestSandboxTable:
    @pytest.mark.parametrize(
        ("number", "status", "http", "decline_code"),
        [
            (VISA, "succeeded", 201, None),
            (MASTERCARD, "succeeded", 201, None),
            (AMEX, "succeeded", 201, None),
            ("4000000000000002", "declined", 402, "generic_decline"),
            ("4000000000009995", "declined", 402, "insufficient_funds"),
            ("4000000000009987", "declined", 402, "lost_card"),
            ("4000000000009979", "declined", 402, "stolen_card"),
            ("4000000000000069", "declined", 402, "expired_card"),
            ("4000000000000127", "declined", 402, "incorrect_cvc"),
            ("4000000000000119", "failed", 402, "processing_error"),
        ],
    )
    async def test_outcome_by_card_number(
        self,
        pay_client: Client,
        sandbox_agency: AgencyKeys,
        number: str,
        status: str,
        http: int,
        decline_code: str | None,
    ) -> None:
        """Each published test card gives its outcome, status code and decline code."""
        token = await tokenize(pay_client, sandbox_agency, number, cvc=AMEX_CVC if number == AMEX else CVC)
        resp = await charge(pay_client, sandbox_agency, token, 1999, order_reference="FL-1")
        body = await resp.json()
        assert resp.status == http, body
        assert_charge_shape(body)
        assert (body["status"], body["decline_code"]) == (status, decline_code)
        assert body["processor"]["name"] == "sandbox"
        assert body["card"]["last4"] == number[-4:]
        if status == "succeeded":
            assert body["amount_captured"] == 1999
            assert body["processor"]["auth_code"]
            assert resp.headers["Location"] == f"/v1/charges/{body['id']}"

    @pytest.mark.parametrize(
        ("postal_code", "cvc", "avs", "cvc_check"),
        [("40601", CVC, "Y", "pass"), ("00000", CVC, "N", "pass"), (None, None, "P", "unchecked")],
    )
    async def test_avs_and_cvc_results(
        self,
        pay_client: Client,
        sandbox_agency: AgencyKeys,
        postal_code: str | None,
        cvc: str | None,
        avs: str,
        cvc_check: str,
    ) -> None:
        """The sandbox reports AVS from the postal code and the CVC check from whether a CVC was kept."""
        extra = {"postal_code": postal_code} if postal_code else {}
        token = await tokenize(pay_client, sandbox_agency, cvc=cvc, **extra)
        body = await (await charge(pay_client, sandbox_agency, token)).json()
        assert (body["processor"]["avs_result"], body["processor"]["cvc_check"]) == (avs, cvc_check)

    async def test_incorrect_cvc_card_fails_the_cvc_check(self, pay_client: Client, sandbox_agency: AgencyKeys) -> None:
        """The incorrect-CVC card reports the CVC check as failed."""
        token = await tokenize(pay_client, sandbox_agency, "4000000000000127")
        body = await (await charge(pay_client, sandbox_agency, token)).json()
        assert body["processor"]["cvc_check"] == "fail"


class TestLifecycle:
    async def test_authorize_then_partial_capture_then_refunds(
        self, pay_client: Client, sandbox_agency: AgencyKeys
    ) -> None:
        """capture=false holds the amount; a lower capture succeeds; refunds never exceed what was captured."""
        token = await tokenize(pay_client, sandbox_agency)
        held = await charge(pay_client, sandbox_agency, token, 5000, capture=False)
        body = await held.json()
        assert (held.status, body["status"], body["amount_captured"]) == (201, "requires_capture", 0)
        cid = body["id"]
        captured = await pay_client.post(
            f"/v1/charges/{cid}/capture", json={"amount": 4000}, headers=sandbox_agency.auth
        )
        body = await captured.json()
        assert (captured.status, body["status"], body["amount_captured"]) == (200, "succeeded", 4000)
        again = await pay_client.post(f"/v1/charges/{cid}/capture", headers=sandbox_agency.auth)
        assert (again.status, (await again.json())["code"]) == (409, "charge_already_captured")
        refund = await pay_client.post(f"/v1/charges/{cid}/refunds", json={"amount": 1500}, headers=sandbox_agency.auth)
        refund_body = await refund.json()
        assert refund.status == 201
        voided = await pay_client.post(f"/v1/charges/{cid}/void", headers=sandbox_agency.auth)
        assert (voided.status, (await voided.json())["code"]) == (409, "charge_not_voidable")
        assert (refund_body["object"], refund_body["amount"], refund_body["charge"]) == ("refund", 1500, cid)
        too_much = await pay_client.post(
            f"/v1/charges/{cid}/refunds", json={"amount": 2501}, headers=sandbox_agency.auth
        )
        problem = await too_much.json()
        assert (too_much.status, problem["errors"][0]["field"], problem["errors"][0]["code"]) == (
            422,
            "amount",
            "amount_too_large",
        )
        rest = await pay_client.post(f"/v1/charges/{cid}/refunds", headers=sandbox_agency.auth)
        assert (rest.status, (await rest.json())["amount"]) == (201, 2500)
        done = await pay_client.get(f"/v1/charges/{cid}", headers=sandbox_agency.auth)
        final = await done.json()
        assert (final["amount_refunded"], len(final["refunds"])) == (4000, 2)
        assert [h["status"] for h in final["history"]] == ["requires_capture", "succeeded"]
        once_more = await pay_client.post(f"/v1/charges/{cid}/refunds", headers=sandbox_agency.auth)
        assert (once_more.status, (await once_more.json())["code"]) == (409, "charge_fully_refunded")

    async def test_capture_above_authorized_amount_is_refused(
        self, pay_client: Client, sandbox_agency: AgencyKeys
    ) -> None:
        """A capture larger than the authorization is a 422 on amount."""
        token = await tokenize(pay_client, sandbox_agency)
        cid = (await (await charge(pay_client, sandbox_agency, token, 1000, capture=False)).json())["id"]
        resp = await pay_client.post(f"/v1/charges/{cid}/capture", json={"amount": 1001}, headers=sandbox_agency.auth)
        assert resp.status == 422

    async def test_void_releases_an_authorization(self, pay_client: Client, sandbox_agency: AgencyKeys) -> None:
        """Voiding a held charge makes it voided; it can then be neither captured nor refunded."""
        token = await tokenize(pay_client, sandbox_agency)
        cid = (await (await charge(pay_client, sandbox_agency, token, capture=False)).json())["id"]
        voided = await pay_client.post(f"/v1/charges/{cid}/void", headers=sandbox_agency.auth)
        assert (voided.status, (await voided.json())["status"]) == (200, "voided")
        capture = await pay_client.post(f"/v1/charges/{cid}/capture", headers=sandbox_agency.auth)
        refund = await pay_client.post(f"/v1/charges/{cid}/refunds", headers=sandbox_agency.auth)
        assert (capture.status, refund.status) == (409, 409)

    async def test_declined_charge_cannot_be_refunded(self, pay_client: Client, sandbox_agency: AgencyKeys) -> None:
        """Nothing was taken, so nothing can be refunded."""
        token = await tokenize(pay_client, sandbox_agency, "4000000000000002")
        cid = (await (await charge(pay_client, sandbox_agency, token)).json())["id"]
        refund = await pay_client.post(f"/v1/charges/{cid}/refunds", headers=sandbox_agency.auth)
        assert (refund.status, (await refund.json())["code"]) == (409, "charge_not_refundable")

    async def test_list_by_order_reference(self, pay_client: Client, sandbox_agency: AgencyKeys) -> None:
        """Charges are found by the agency's order reference, oldest first."""
        token = await tokenize(pay_client, sandbox_agency)
        first = (await (await charge(pay_client, sandbox_agency, token, order_reference="PARK-77")).json())["id"]
        second = (await (await charge(pay_client, sandbox_agency, token, order_reference="PARK-77")).json())["id"]
        await charge(pay_client, sandbox_agency, token, order_reference="PARK-78")
        resp = await pay_client.get("/v1/charges", params={"order_reference": "PARK-77"}, headers=sandbox_agency.auth)
        listed = await resp.json()
        assert resp.status == 200, listed
        assert {c["id"] for c in listed["data"]} == {first, second}


class TestBadInputCallsNoProcessor:
    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"amount": 0}, "amount"),
            ({"amount": -5}, "amount"),
            ({"amount": 12.5}, "amount"),
            ({"amount": "100"}, "amount"),
            ({"amount": True}, "amount"),
            ({"amount": 100_000_000}, "amount"),
            ({"currency": "eur"}, "currency"),
            ({"channel": "carrier-pigeon"}, "channel"),
            ({"capture": "yes"}, "capture"),
            ({"surprise": 1}, "surprise"),
            ({"description": f"card {VISA}"}, "description"),
            ({"order_reference": VISA}, "order_reference"),
        ],
    )
    async def test_invalid_fields(
        self, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet, body: dict[str, Any], field: str
    ) -> None:
        """Each invalid field is a 422 naming it, and the processor is never called."""
        token = await tokenize(pay_client, anet_agency)
        payload = {"token": token, "amount": 100, **body}
        resp = await pay_client.post("/v1/charges", json=payload, headers=anet_agency.auth)
        problem = await resp.json()
        assert resp.status == 422, problem
        assert field in {e["field"] for e in problem["errors"]}
        assert authnet.total_requests == 0
        assert not leaks.cards_in_text(json.dumps(problem))
        status = await pay_client.get(f"/v1/tokens/{token}", headers=anet_agency.auth)
        assert (await status.json())["cvc_retained"] is True

    async def test_agency_limit(self, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet) -> None:
        """An amount over the agency's own limit is refused before the processor."""
        agencies = pay_client.app[SERVICES].agencies
        assert agencies is not None
        await AgencySettingsService(agencies).set_max_amount(anet_agency.slug, 5000)
        token = await tokenize(pay_client, anet_agency)
        resp = await charge(pay_client, anet_agency, token, 5001)
        problem = await resp.json()
        assert (resp.status, problem["errors"][0]["code"]) == (422, "amount_over_limit")
        assert (await charge(pay_client, anet_agency, token, 5000)).status == 201
        assert authnet.total_requests == 1

    async def test_unknown_and_foreign_tokens(
        self, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet
    ) -> None:
        """An unknown token and another agency's token are the same 404, with no processor call."""
        other = await create_agency(pay_client)
        foreign = await tokenize(pay_client, other)
        for token in (foreign, "tok_" + "A" * 24):
            resp = await charge(pay_client, anet_agency, token)
            assert (resp.status, (await resp.json())["code"]) == (404, "token_not_found")
        malformed = await charge(pay_client, anet_agency, "not-a-token")
        assert (malformed.status, (await malformed.json())["errors"][0]["field"]) == (422, "token")
        assert authnet.total_requests == 0
        still = await pay_client.get(f"/v1/tokens/{foreign}", headers=other.auth)
        assert (await still.json())["cvc_retained"] is True

    async def test_publishable_key_cannot_charge(self, pay_client: Client, anet_agency: AgencyKeys) -> None:
        """Charging needs the secret key."""
        token = await tokenize(pay_client, anet_agency)
        resp = await pay_client.post(
            "/v1/charges", json={"token": token, "amount": 100}, headers=anet_agency.public_auth
        )
        assert (resp.status, (await resp.json())["code"]) == (403, "secret_key_required")

    async def test_other_agency_charge_is_not_found(self, pay_client: Client, sandbox_agency: AgencyKeys) -> None:
        """Another agency's charge id answers 404 for reading, capturing, voiding and refunding."""
        token = await tokenize(pay_client, sandbox_agency)
        cid = (await (await charge(pay_client, sandbox_agency, token, capture=False)).json())["id"]
        other = await create_agency(pay_client)
        assert (await pay_client.get(f"/v1/charges/{cid}", headers=other.auth)).status == 404
        for action in ("capture", "void", "refunds"):
            resp = await pay_client.post(f"/v1/charges/{cid}/{action}", headers=other.auth)
            assert (resp.status, (await resp.json())["code"]) == (404, "charge_not_found")


class TestIdempotency:
    async def test_retry_replays_the_first_answer_byte_for_byte(
        self, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet
    ) -> None:
        """The same key and body answer the same status and bytes, and reach the processor once."""
        token = await tokenize(pay_client, anet_agency)
        first = await charge(pay_client, anet_agency, token, idempotency_key="order-1")
        again = await charge(pay_client, anet_agency, token, idempotency_key="order-1")
        assert (first.status, again.status) == (201, 201)
        assert await first.read() == await again.read()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.headers["Location"] == first.headers["Location"]
        assert authnet.counts["authCaptureTransaction"] == 1

    async def test_declines_replay_too(
        self, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet
    ) -> None:
        """A 402 decline is the answer for that key: a retry does not try the card again."""
        token = await tokenize(pay_client, anet_agency, "4000000000000002")
        first = await charge(pay_client, anet_agency, token, idempotency_key="dec-1")
        again = await charge(pay_client, anet_agency, token, idempotency_key="dec-1")
        assert (first.status, again.status) == (402, 402)
        assert await first.read() == await again.read()
        assert authnet.total_requests == 1

    async def test_same_key_other_body_is_refused(self, pay_client: Client, anet_agency: AgencyKeys) -> None:
        """Reusing a key for a different request is a 422."""
        token = await tokenize(pay_client, anet_agency)
        assert (await charge(pay_client, anet_agency, token, 100, idempotency_key="k-2")).status == 201
        resp = await charge(pay_client, anet_agency, token, 200, idempotency_key="k-2")
        assert (resp.status, (await resp.json())["code"]) == (422, "idempotency_key_reused")

    async def test_keys_are_scoped_to_the_agency(self, pay_client: Client, sandbox_agency: AgencyKeys) -> None:
        """Two agencies may use the same key without seeing each other's answers."""
        other = await create_agency(pay_client)
        mine = await charge(pay_client, sandbox_agency, await tokenize(pay_client, sandbox_agency), idempotency_key="s")
        theirs = await charge(pay_client, other, await tokenize(pay_client, other), idempotency_key="s")
        assert (mine.status, theirs.status) == (201, 201)
        assert (await mine.json())["id"] != (await theirs.json())["id"]

    async def test_fifty_concurrent_identical_requests_reach_the_processor_once(
        self, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet
    ) -> None:
        """Fifty simultaneous retries of one charge make exactly one processor call and one charge."""
        token = await tokenize(pay_client, anet_agency)
        authnet.delay = 0.3
        answers = await asyncio.gather(
            *(charge(pay_client, anet_agency, token, 4200, idempotency_key="burst-1") for _ in range(50))
        )
        statuses = sorted(r.status for r in answers)
        assert authnet.counts["authCaptureTransaction"] == 1
        assert statuses.count(201) >= 1
        assert set(statuses) <= {201, 409}
        ids = {(await r.json()).get("id") for r in answers if r.status == 201}
        assert len(ids) == 1
        for r in answers:
            if r.status == 409:
                assert (await r.json())["code"] == "idempotency_request_in_progress"
        later = await charge(pay_client, anet_agency, token, 4200, idempotency_key="burst-1")
        assert (later.status, (await later.json())["id"]) == (201, ids.pop())
        assert authnet.counts["authCaptureTransaction"] == 1

    async def test_tokens_are_idempotent_too(
        self, pay_client: Client, sandbox_agency: AgencyKeys, redis_server: RedisServer
    ) -> None:
        """POST /v1/tokens with the same key returns the same token instead of a second one."""
        body = {"card": {"number": VISA, "exp_month": 12, "exp_year": 2031}}
        headers = {**sandbox_agency.auth, "Idempotency-Key": "tok-1"}
        first = await pay_client.post("/v1/tokens", json=body, headers=headers)
        again = await pay_client.post("/v1/tokens", json=body, headers=headers)
        assert await first.read() == await again.read()
        assert len(agency_data_keys(redis_server.client(), sandbox_agency.id, "tok")) == 1

    @pytest.mark.parametrize("key", ["", "x" * 256, "naïve", "tab\there"])
    async def test_malformed_keys_are_refused(self, pay_client: Client, sandbox_agency: AgencyKeys, key: str) -> None:
        """Keys must be 1 to 255 printable ASCII characters."""
        token = await tokenize(pay_client, sandbox_agency)
        resp = await pay_client.post(
            "/v1/charges", json={"token": token, "amount": 1}, headers={**sandbox_agency.auth, "Idempotency-Key": key}
        )
        assert (resp.status, (await resp.json())["code"]) == (400, "idempotency_key_invalid")


class TestCvcLifecycle:
    @pytest.mark.parametrize("number", [VISA, "4000000000000002"])
    async def test_first_authorization_takes_the_cvc(
        self,
        pay_client: Client,
        anet_agency: AgencyKeys,
        authnet: FakeAuthorizeNet,
        redis_server: RedisServer,
        number: str,
    ) -> None:
        """The CVC goes to the first authorization, approved or declined, and is gone from Redis afterwards."""
        token = await tokenize(pay_client, anet_agency, number)
        await charge(pay_client, anet_agency, token)
        sent = authnet.last_request.body["createTransactionRequest"]["transactionRequest"]["payment"]["creditCard"]
        assert sent["cardCode"] == "***"
        assert not redis_server.client().exists(cvc_key(anet_agency.id, token))
        status = await pay_client.get(f"/v1/tokens/{token}", headers=anet_agency.auth)
        assert (await status.json())["cvc_retained"] is False
        await charge(pay_client, anet_agency, token)
        second = authnet.last_request.body["createTransactionRequest"]["transactionRequest"]["payment"]["creditCard"]
        assert "cardCode" not in second

    async def test_processor_failure_still_takes_the_cvc(
        self, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet
    ) -> None:
        """Even an authorization that got no answer used the CVC up."""
        token = await tokenize(pay_client, anet_agency)
        authnet.fail_next(1)
        resp = await charge(pay_client, anet_agency, token)
        assert resp.status == 502
        status = await pay_client.get(f"/v1/tokens/{token}", headers=anet_agency.auth)
        assert (await status.json())["cvc_retained"] is False


class TestProcessorFailures:
    async def test_timeout_is_unknown_and_a_retry_never_charges_twice(
        self, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet
    ) -> None:
        """No answer within the timeout gives 504 with the charge in status unknown; the retry replays it."""
        token = await tokenize(pay_client, anet_agency)
        authnet.delay = 3.0
        first = await asyncio.wait_for(charge(pay_client, anet_agency, token, idempotency_key="slow-1"), 10)
        problem = await first.json()
        assert (first.status, problem["code"]) == (504, "processor_timeout")
        assert problem["charge"]["status"] == "unknown"
        authnet.delay = 0
        again = await charge(pay_client, anet_agency, token, idempotency_key="slow-1")
        assert await again.read() == await first.read()
        assert authnet.counts["authCaptureTransaction"] == 1
        stored = await pay_client.get(f"/v1/charges/{problem['charge']['id']}", headers=anet_agency.auth)
        assert (await stored.json())["status"] == "unknown"

    async def test_sandbox_slow_card_times_out(self, pay_client: Client, sandbox_agency: AgencyKeys) -> None:
        """The sandbox's slow card exercises the timeout path."""
        token = await tokenize(pay_client, sandbox_agency, "4012888888881881")
        resp = await asyncio.wait_for(charge(pay_client, sandbox_agency, token), 10)
        assert (resp.status, (await resp.json())["charge"]["status"]) == (504, "unknown")

    async def test_circuit_breaker_answers_fast_then_recovers(
        self, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet
    ) -> None:
        """After repeated failures calls stop at once with 503, and a trial call later closes the circuit."""
        authnet.fail_next(3)
        for _ in range(3):
            resp = await charge(pay_client, anet_agency, await tokenize(pay_client, anet_agency))
            assert (resp.status, (await resp.json())["code"]) == (502, "processor_unavailable")
        calls = authnet.total_requests
        token = await tokenize(pay_client, anet_agency)
        paused = await charge(pay_client, anet_agency, token)
        assert (paused.status, (await paused.json())["code"]) == (503, "processor_circuit_open")
        assert paused.headers["Retry-After"]
        assert authnet.total_requests == calls
        status = await pay_client.get(f"/v1/tokens/{token}", headers=anet_agency.auth)
        assert (await status.json())["cvc_retained"] is True
        await asyncio.sleep(1.1)
        assert (await charge(pay_client, anet_agency, token)).status == 201

    async def test_wrong_credentials(
        self, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet
    ) -> None:
        """Rejected credentials are a 502 processor_rejected with the failed charge attached."""
        authnet.transaction_key = "different000key"
        resp = await charge(pay_client, anet_agency, await tokenize(pay_client, anet_agency))
        problem = await resp.json()
        assert (resp.status, problem["code"], problem["charge"]["status"]) == (502, "processor_rejected", "failed")


class TestAuthorizeNet:
    async def test_full_flow_through_the_gateway(
        self, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet
    ) -> None:
        """Authorize, capture and refund go to Authorize.Net with its transaction ids."""
        token = await tokenize(pay_client, anet_agency)
        held = await (await charge(pay_client, anet_agency, token, 3000, capture=False)).json()
        assert held["status"] == "requires_capture"
        assert held["processor"]["transaction_id"] in authnet.transactions
        captured = await pay_client.post(f"/v1/charges/{held['id']}/capture", headers=anet_agency.auth)
        assert (await captured.json())["status"] == "succeeded"
        refund = await pay_client.post(
            f"/v1/charges/{held['id']}/refunds", json={"amount": 1000}, headers=anet_agency.auth
        )
        assert refund.status == 201
        assert authnet.counts["authOnlyTransaction"] == 1
        assert authnet.counts["priorAuthCaptureTransaction"] == 1
        assert authnet.counts["refundTransaction"] == 1

    async def test_decline(self, pay_client: Client, anet_agency: AgencyKeys) -> None:
        """A gateway decline is a 402 with the decline code."""
        token = await tokenize(pay_client, anet_agency, "4000000000000002")
        resp = await charge(pay_client, anet_agency, token)
        assert (resp.status, (await resp.json())["decline_code"]) == (402, "generic_decline")


class TestNothingStoredInClear:
    async def test_charge_records_hold_no_card_data(
        self, pay_client: Client, sandbox_agency: AgencyKeys, redis_server: RedisServer
    ) -> None:
        """A charge record in Redis has the last four and processor ids, never the number."""
        token = await tokenize(pay_client, sandbox_agency)
        cid = (await (await charge(pay_client, sandbox_agency, token)).json())["id"]
        raw = redis_server.client().get(charge_key(sandbox_agency.id, cid))
        assert raw is not None
        assert not leaks.cards_in_bytes(raw)
        assert b'"card_last4":"4242"' in raw


class TestVoidUntilSettlement:
    """A captured charge is voided until the processor settles it, refunded after (the staff pages agree)."""

    async def test_sandbox_sale_is_voidable_until_the_cut_off(
        self, pay_client: Client, sandbox_agency: AgencyKeys, clock: FakeClock
    ) -> None:
        """Before the sandbox's daily cut-off a sale voids (nothing captured); after it, 409 charge_settled."""
        move_to_morning(clock)
        token = await tokenize(pay_client, sandbox_agency)
        early = (await (await charge(pay_client, sandbox_agency, token, 2500)).json())["id"]
        voided = await pay_client.post(f"/v1/charges/{early}/void", headers=sandbox_agency.auth)
        body = await voided.json()
        assert (voided.status, body["status"], body["amount_captured"]) == (200, "voided", 0)
        assert [h["status"] for h in body["history"]] == ["succeeded", "voided"]
        late = await (await charge(pay_client, sandbox_agency, await tokenize(pay_client, sandbox_agency))).json()
        clock.advance(DAY)
        refused = await pay_client.post(f"/v1/charges/{late['id']}/void", headers=sandbox_agency.auth)
        assert (refused.status, (await refused.json())["code"]) == (409, "charge_settled")
        refund = await pay_client.post(f"/v1/charges/{late['id']}/refunds", headers=sandbox_agency.auth)
        assert refund.status == 201

    async def test_authorize_net_voids_an_unsettled_sale(
        self, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet
    ) -> None:
        """A captured but unsettled authCaptureTransaction is voided with voidTransaction."""
        authnet.auto_settle = False
        token = await tokenize(pay_client, anet_agency)
        cid = (await (await charge(pay_client, anet_agency, token, 2000)).json())["id"]
        voided = await pay_client.post(f"/v1/charges/{cid}/void", headers=anet_agency.auth)
        body = await voided.json()
        assert (voided.status, body["status"]) == (200, "voided")
        assert authnet.transactions[body["processor"]["transaction_id"]].status == "voided"

    async def test_authorize_net_settled_sale_is_refused_then_refunded(
        self, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet
    ) -> None:
        """The gateway refuses the void of a settled sale; the vault says charge_settled, remembers it (a retry
        does not call the gateway) and the refund goes through."""
        authnet.auto_settle = False
        token = await tokenize(pay_client, anet_agency)
        cid = (await (await charge(pay_client, anet_agency, token, 2000)).json())["id"]
        authnet.settle()
        calls = authnet.counts["voidTransaction"]
        refused = await pay_client.post(f"/v1/charges/{cid}/void", headers=anet_agency.auth)
        assert (refused.status, (await refused.json())["code"]) == (409, "charge_settled")
        assert authnet.counts["voidTransaction"] == calls + 1
        again = await pay_client.post(f"/v1/charges/{cid}/void", headers=anet_agency.auth)
        assert (again.status, (await again.json())["code"]) == (409, "charge_settled")
        assert authnet.counts["voidTransaction"] == calls + 1
        still = await (await pay_client.get(f"/v1/charges/{cid}", headers=anet_agency.auth)).json()
        assert (still["status"], still["amount_captured"]) == ("succeeded", 2000)
        refund = await pay_client.post(f"/v1/charges/{cid}/refunds", headers=anet_agency.auth)
        assert refund.status == 201


class TestRuleRefusalsCallNoProcessor:
    async def test_capture_twice_void_after_capture_and_over_refund(
        self, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet
    ) -> None:
        """Refusals of the charge rules are answered by the vault alone: the gateway sees nothing."""
        token = await tokenize(pay_client, anet_agency)
        cid = (await (await charge(pay_client, anet_agency, token, 2000)).json())["id"]
        calls = authnet.total_requests
        capture = await pay_client.post(f"/v1/charges/{cid}/capture", headers=anet_agency.auth)
        refund = await pay_client.post(f"/v1/charges/{cid}/refunds", json={"amount": 2001}, headers=anet_agency.auth)
        zero = await pay_client.post(f"/v1/charges/{cid}/refunds", json={"amount": 0}, headers=anet_agency.auth)
        assert [capture.status, refund.status, zero.status] == [409, 422, 422]
        assert (await capture.json())["code"] == "charge_already_captured"
        assert authnet.total_requests == calls

    async def test_damaged_card_ciphertext_fails_the_charge_without_a_processor_call(
        self, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet, redis_server: RedisServer
    ) -> None:
        """A token whose ciphertext does not authenticate gives 500 integrity_error and a failed charge."""
        token = await tokenize(pay_client, anet_agency)
        other = await tokenize(pay_client, anet_agency, MASTERCARD)
        r = redis_server.client()
        r.set(token_key(anet_agency.id, token), r.get(token_key(anet_agency.id, other)), keepttl=True)
        resp = await charge(pay_client, anet_agency, token, idempotency_key="broken-1")
        assert (resp.status, (await resp.json())["code"]) == (500, "integrity_error")
        assert authnet.total_requests == 0
        recorded = await pay_client.get(
            f"/v1/charges/{charge_id_for(anet_agency.id, 'broken-1')}", headers=anet_agency.auth
        )
        assert (await recorded.json())["status"] == "failed"


class TestRefundsHappenOnce:
    async def test_retry_after_the_idempotency_record_is_gone_finds_the_refund(
        self, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet, redis_server: RedisServer
    ) -> None:
        """A refund's id comes from its key, so even without the idempotency record a retry refunds nothing more."""
        token = await tokenize(pay_client, anet_agency)
        cid = (await (await charge(pay_client, anet_agency, token, 3000)).json())["id"]
        headers = {**anet_agency.auth, "Idempotency-Key": "refund-7"}
        first = await pay_client.post(f"/v1/charges/{cid}/refunds", json={"amount": 1000}, headers=headers)
        assert first.status == 201
        for key in agency_data_keys(redis_server.client(), anet_agency.id, "idem"):
            redis_server.client().delete(key)
        again = await pay_client.post(f"/v1/charges/{cid}/refunds", json={"amount": 1000}, headers=headers)
        assert again.status == 201
        assert (await again.json())["id"] == (await first.json())["id"]
        assert authnet.counts["refundTransaction"] == 1
        stored = await (await pay_client.get(f"/v1/charges/{cid}", headers=anet_agency.auth)).json()
        assert (stored["amount_refunded"], len(stored["refunds"])) == (1000, 1)

    async def test_a_refund_without_an_answer_is_unknown_and_reserves_its_amount(
        self, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet
    ) -> None:
        """A timed-out refund is 504 with the refund unknown; its amount cannot be refunded again meanwhile."""
        token = await tokenize(pay_client, anet_agency)
        cid = (await (await charge(pay_client, anet_agency, token, 3000)).json())["id"]
        authnet.delay = 3.0
        slow = await pay_client.post(f"/v1/charges/{cid}/refunds", json={"amount": 2000}, headers=anet_agency.auth)
        problem = await slow.json()
        assert (slow.status, problem["code"]) == (504, "processor_timeout")
        assert [r["status"] for r in problem["charge"]["refunds"]] == ["unknown"]
        authnet.delay = 0
        too_much = await pay_client.post(f"/v1/charges/{cid}/refunds", json={"amount": 1001}, headers=anet_agency.auth)
        assert too_much.status == 422
        rest = await pay_client.post(f"/v1/charges/{cid}/refunds", json={"amount": 1000}, headers=anet_agency.auth)
        assert rest.status in (201, 402)

    async def test_a_charge_refused_by_a_paused_processor_keeps_its_cvc(
        self, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet
    ) -> None:
        """While the one trial call after a pause is in flight, other charges get 503 and keep their CVC."""
        authnet.fail_next(3)
        for _ in range(3):
            await charge(pay_client, anet_agency, await tokenize(pay_client, anet_agency))
        await asyncio.sleep(1.1)
        authnet.delay = 1.0
        trial_token, other_token = await tokenize(pay_client, anet_agency), await tokenize(pay_client, anet_agency)
        trial = asyncio.ensure_future(charge(pay_client, anet_agency, trial_token))
        await asyncio.sleep(0.3)
        other = await charge(pay_client, anet_agency, other_token)
        assert (other.status, (await other.json())["code"]) == (503, "processor_circuit_open")
        assert "charge" not in await other.json()
        status = await pay_client.get(f"/v1/tokens/{other_token}", headers=anet_agency.auth)
        assert (await status.json())["cvc_retained"] is True
        assert (await trial).status == 201


class TestProcessorSettingsTakeEffect:
    async def test_new_credentials_are_used_by_the_next_charge(
        self, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet
    ) -> None:
        """The per-process adapter cache follows set-processor: the next charge uses the new credentials."""
        agencies = pay_client.app[SERVICES].agencies
        assert agencies is not None
        assert (await charge(pay_client, anet_agency, await tokenize(pay_client, anet_agency))).status == 201
        await AgencySettingsService(agencies).set_processor(
            anet_agency.slug,
            ProcessorName.AUTHORIZE_NET,
            login_id=authnet.login_id,
            transaction_key="wrong000key0000",
            endpoint=authnet.endpoint,
        )
        refused = await charge(pay_client, anet_agency, await tokenize(pay_client, anet_agency))
        assert (refused.status, (await refused.json())["code"]) == (502, "processor_rejected")
        await AgencySettingsService(agencies).set_processor(
            anet_agency.slug,
            ProcessorName.AUTHORIZE_NET,
            login_id=authnet.login_id,
            transaction_key=authnet.transaction_key,
            endpoint=authnet.endpoint,
        )
        assert (await charge(pay_client, anet_agency, await tokenize(pay_client, anet_agency))).status == 201
