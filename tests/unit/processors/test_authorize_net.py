"""The Authorize.Net adapter against a local HTTPS fake of Authorize.Net's sandbox.

Every test drives the real adapter over real TLS to ``FakeAuthorizeNet``,
which validates each request against the API's schema rules and answers in
the real response shape, byte order mark included.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from service.adapters.processors.authorize_net import (
    PRODUCTION_ENDPOINT,
    SANDBOX_ENDPOINT,
    AuthorizeNetProcessor,
)
from service.adapters.processors.base import (
    TRANSACTION_SETTLED,
    AuthorizationRequest,
    CardDetails,
    Outcome,
    Processor,
    ProcessorError,
    ProcessorRejected,
    ProcessorResult,
    ProcessorTimeout,
    ProcessorUnavailable,
)
from service.domain.cards import parse_card_number, parse_cvc
from tests.support.cards import AMEX, AMEX_CVC, CVC, DISCOVER, MASTERCARD, VISA, VISA_ALT
from tests.support.fake_authorize_net import INSUFFICIENT_FUNDS_TEXT, FakeAuthorizeNet

DECLINE = "4000000000000002"
INSUFFICIENT_FUNDS = "4000000000009995"
PICK_UP = "4000000000009987"
EXPIRED = "4000000000000069"
BAD_CVC = "4000000000000127"
PROCESSING_ERROR = "4000000000000119"

_references = itertools.count(1)


def reference() -> str:
    return f"ch_test{next(_references):010d}"


def card(
    number: str = VISA,
    cvc: str | None = CVC,
    *,
    zip_code: str | None = "94107",
    name: str | None = "Jane Q Public",
    expiry: tuple[int, int] = (12, 2031),
) -> CardDetails:
    pan = parse_card_number(number)
    return CardDetails(pan, expiry[0], expiry[1], parse_cvc(cvc, pan.brand) if cvc else None, name, zip_code)


def charge(
    details: CardDetails | None = None,
    amount: int = 1234,
    *,
    capture: bool = True,
    **extra: Any,
) -> AuthorizationRequest:
    fields: dict[str, Any] = {"description": "Fishing licence", "reference": reference()} | extra
    return AuthorizationRequest(details or card(), amount, "usd", capture, **fields)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAuthorizeNet]:
    async with FakeAuthorizeNet() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def adapter(
    fake: FakeAuthorizeNet, session: aiohttp.ClientSession, *, timeout: float = 10.0, **overrides: Any
) -> AuthorizeNetProcessor:
    options: dict[str, Any] = {"endpoint": fake.endpoint, "ssl": fake.client_ssl_context(), "timeout": timeout}
    options |= overrides
    login_id = options.pop("login_id", fake.login_id)
    transaction_key = options.pop("transaction_key", fake.transaction_key)
    return AuthorizeNetProcessor(login_id, transaction_key, session=session, **options)


@pytest.fixture
def processor(fake: FakeAuthorizeNet, session: aiohttp.ClientSession) -> AuthorizeNetProcessor:
    return adapter(fake, session)


async def authorized(processor: AuthorizeNetProcessor, amount: int = 1000, *, capture: bool) -> str:
    result = await processor.authorize(charge(amount=amount, capture=capture))
    assert result.approved
    assert result.transaction_id
    return result.transaction_id


class TestApprovals:
    async def test_approval_carries_ids_and_checks(self, processor: AuthorizeNetProcessor) -> None:
        """An approved sale returns the transaction id, auth code, AVS letter and a passed CVC check."""
        result = await processor.authorize(charge())
        assert result.outcome is Outcome.APPROVED
        assert result.transaction_id is not None
        assert result.transaction_id.isdigit()
        assert result.auth_code is not None
        assert len(result.auth_code) == 6
        assert (result.avs_result, result.cvc_check) == ("Y", "pass")
        assert result.decline_code is None
        assert result.message == "This transaction has been approved."

    @pytest.mark.parametrize(
        ("number", "cvc"), [(VISA, CVC), (MASTERCARD, CVC), (AMEX, AMEX_CVC), (VISA_ALT, CVC), (DISCOVER, CVC)]
    )
    async def test_public_test_cards_approve(
        self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet, number: str, cvc: str
    ) -> None:
        """Each approving test card number is approved and shows as XXXX plus its last four at the fake."""
        result = await processor.authorize(charge(card(number, cvc)))
        assert result.approved
        assert result.transaction_id is not None
        assert fake.transactions[result.transaction_id].last4 == number[-4:]

    async def test_sale_is_one_auth_capture_request(
        self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet
    ) -> None:
        """capture=True sends exactly one authCaptureTransaction, which leaves the charge captured."""
        result = await processor.authorize(charge(amount=2500))
        assert fake.counts == {"authCaptureTransaction": 1}
        assert result.transaction_id is not None
        assert fake.transactions[result.transaction_id].captured == 2500

    async def test_auth_only_leaves_the_charge_uncaptured(
        self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet
    ) -> None:
        """capture=False sends authOnlyTransaction and nothing is captured yet."""
        result = await processor.authorize(charge(capture=False))
        assert fake.counts == {"authOnlyTransaction": 1}
        assert result.transaction_id is not None
        assert fake.transactions[result.transaction_id].status == "authorizedPendingCapture"

    async def test_held_for_review(self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet) -> None:
        """responseCode 4 (a fraud filter holding the charge) is reported as held for review."""
        fake.hold_for_review = True
        result = await processor.authorize(charge())
        assert result.outcome is Outcome.HELD
        assert result.transaction_id is not None
        assert result.decline_code is None
        assert result.message == "Your order has been received. Thank you for your business!"

    @pytest.mark.parametrize(
        ("code", "check"),
        [("900", "pass"), ("901", "fail"), ("902", "unchecked"), ("903", "unavailable"), ("904", "unchecked")],
    )
    async def test_cvc_result_letters(self, processor: AuthorizeNetProcessor, code: str, check: str) -> None:
        """The sandbox's card codes 900-904 produce M, N, S, U, P, mapped to our cvc_check words."""
        result = await processor.authorize(charge(card(VISA, code)))
        assert result.approved
        assert result.cvc_check == check

    async def test_no_cvc_is_unchecked(self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet) -> None:
        """Without a CVC no cardCode is sent and the check reads unchecked."""
        result = await processor.authorize(charge(card(VISA, None)))
        assert result.approved
        assert result.cvc_check == "unchecked"
        assert (
            "cardCode"
            not in fake.last_request.body["createTransactionRequest"]["transactionRequest"]["payment"]["creditCard"]
        )

    @pytest.mark.parametrize(("zip_code", "letter"), [("46205", "N"), ("46201", "A"), ("46217", "Z"), (None, "P")])
    async def test_avs_letter_is_passed_through(
        self, processor: AuthorizeNetProcessor, zip_code: str | None, letter: str
    ) -> None:
        """The AVS letter from the sandbox's test ZIP codes reaches the result unchanged."""
        result = await processor.authorize(charge(card(zip_code=zip_code)))
        assert result.approved
        assert result.avs_result == letter


class TestDeclines:
    @pytest.mark.parametrize(
        ("number", "decline_code", "message"),
        [
            (DECLINE, "generic_decline", "This transaction has been declined."),
            (INSUFFICIENT_FUNDS, "generic_decline", INSUFFICIENT_FUNDS_TEXT),
            (PICK_UP, "lost_card", "This transaction has been declined."),
            (EXPIRED, "expired_card", "The credit card has expired."),
            (BAD_CVC, "incorrect_cvc", "This transaction has been declined."),
        ],
    )
    async def test_decline_cards(
        self, processor: AuthorizeNetProcessor, number: str, decline_code: str, message: str
    ) -> None:
        """Each declining test card maps its reason code to our decline code and keeps Authorize.Net's text."""
        result = await processor.authorize(charge(card(number)))
        assert result.outcome is Outcome.DECLINED
        assert (result.decline_code, result.message) == (decline_code, message)
        assert result.auth_code is None

    async def test_incorrect_cvc_reports_the_failed_check(self, processor: AuthorizeNetProcessor) -> None:
        """A card-code decline also carries cvc_check fail."""
        result = await processor.authorize(charge(card(BAD_CVC)))
        assert result.cvc_check == "fail"

    async def test_decline_zip_from_the_testing_guide(self, processor: AuthorizeNetProcessor) -> None:
        """billTo.zip 46282 is the sandbox's documented general decline."""
        result = await processor.authorize(charge(card(zip_code="46282")))
        assert (result.outcome, result.decline_code) == (Outcome.DECLINED, "generic_decline")

    async def test_past_expiry_is_expired_card(self, processor: AuthorizeNetProcessor) -> None:
        """An expiry month before this one is reason 8, expired_card, with no transaction id."""
        result = await processor.authorize(charge(card(expiry=(1, 2020))))
        assert (result.decline_code, result.transaction_id) == ("expired_card", None)

    async def test_duplicate_submission(self, processor: AuthorizeNetProcessor) -> None:
        """The same card, amount and invoice number twice within the window is duplicate_transaction."""
        request = charge()
        assert (await processor.authorize(request)).approved
        result = await processor.authorize(request)
        assert (result.outcome, result.decline_code) == (Outcome.DECLINED, "duplicate_transaction")


class TestFollowUps:
    async def test_partial_capture_of_an_authorization(
        self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet
    ) -> None:
        """priorAuthCaptureTransaction captures less than authorized, under the authorization's id."""
        auth_id = await authorized(processor, 1000, capture=False)
        result = await processor.capture(auth_id, 600, "usd")
        assert result.approved
        assert result.transaction_id == auth_id
        assert fake.transactions[auth_id].captured == 600
        assert fake.counts["priorAuthCaptureTransaction"] == 1

    async def test_capture_beyond_the_authorization_is_refused(
        self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet
    ) -> None:
        """Capturing more than authorized is reason 47, a processing error, and captures nothing."""
        auth_id = await authorized(processor, 1000, capture=False)
        result = await processor.capture(auth_id, 1001, "usd")
        assert (result.outcome, result.decline_code) == (Outcome.ERROR, "processing_error")
        assert result.message is not None
        assert "greater than the original amount authorized" in result.message
        assert fake.transactions[auth_id].captured == 0

    async def test_second_capture_changes_nothing(
        self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet
    ) -> None:
        """A repeated capture is answered like the real gateway does (approved, reason 311) and moves no money."""
        auth_id = await authorized(processor, 1000, capture=False)
        assert (await processor.capture(auth_id, 400, "usd")).approved
        again = await processor.capture(auth_id, 500, "usd")
        assert again.approved
        assert again.message == "This transaction has already been captured."
        assert fake.transactions[auth_id].captured == 400

    async def test_void_an_authorization(self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet) -> None:
        """voidTransaction cancels an uncaptured authorization; a second void says it already happened."""
        auth_id = await authorized(processor, capture=False)
        result = await processor.void(auth_id)
        assert result.approved
        assert fake.transactions[auth_id].status == "voided"
        again = await processor.void(auth_id)
        assert again.approved
        assert again.message == "This transaction has already been voided."
        assert fake.counts["voidTransaction"] == 2

    async def test_void_of_a_settled_capture_is_refused(
        self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet
    ) -> None:
        """A captured and settled charge cannot be voided (reason 16): reported as transaction_settled."""
        sale_id = await authorized(processor, capture=True)
        result = await processor.void(sale_id)
        assert (result.outcome, result.decline_code) == (Outcome.ERROR, TRANSACTION_SETTLED)
        assert fake.transactions[sale_id].status == "settledSuccessfully"

    async def test_unsettled_capture_can_be_voided(
        self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet
    ) -> None:
        """Before settlement a captured charge is voided, as on the real gateway."""
        fake.auto_settle = False
        sale_id = await authorized(processor, capture=True)
        assert (await processor.void(sale_id)).approved
        assert fake.transactions[sale_id].status == "voided"

    async def test_partial_then_full_refund(self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet) -> None:
        """Refunds in parts up to the captured amount succeed, each with its own transaction id."""
        sale_id = await authorized(processor, 1000, capture=True)
        first = await processor.refund(sale_id, 300, "usd", VISA[-4:])
        rest = await processor.refund(sale_id, 700, "usd", VISA[-4:])
        assert first.approved
        assert rest.approved
        assert len({sale_id, first.transaction_id, rest.transaction_id}) == 3
        assert fake.transactions[sale_id].refunded == 1000

    async def test_refund_beyond_captured_is_refused(
        self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet
    ) -> None:
        """Refunding more than was captured (in total) is reason 55 and refunds nothing more."""
        auth_id = await authorized(processor, 1000, capture=False)
        assert (await processor.capture(auth_id, 800, "usd")).approved
        assert (await processor.refund(auth_id, 500, "usd", VISA[-4:])).approved
        result = await processor.refund(auth_id, 301, "usd", VISA[-4:])
        assert (result.outcome, result.decline_code) == (Outcome.ERROR, "processing_error")
        assert result.message is not None
        assert "exceed" in result.message
        assert fake.transactions[auth_id].refunded == 500

    async def test_refund_waits_for_settlement(self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet) -> None:
        """An unsettled charge cannot be refunded (reason 54) until the settlement batch has run."""
        fake.auto_settle = False
        sale_id = await authorized(processor, capture=True)
        refused = await processor.refund(sale_id, 100, "usd", VISA[-4:])
        assert refused.decline_code == "processing_error"
        fake.settle()
        assert (await processor.refund(sale_id, 100, "usd", VISA[-4:])).approved

    @pytest.mark.parametrize("operation", ["capture", "void", "refund"])
    async def test_unknown_transaction(self, processor: AuthorizeNetProcessor, operation: str) -> None:
        """A transaction id the gateway does not know is reason 16, a processing error; for a void, reason 16 is
        what a settled transaction gets too, and the vault voids only ids the gateway approved: settled."""
        if operation == "capture":
            result = await processor.capture("99999999999", 100, "usd")
        elif operation == "void":
            result = await processor.void("99999999999")
        else:
            result = await processor.refund("99999999999", 100, "usd", "4242")
        expected = TRANSACTION_SETTLED if operation == "void" else "processing_error"
        assert (result.outcome, result.decline_code) == (Outcome.ERROR, expected)
        assert result.message == "The transaction cannot be found."


class TestRequestShape:
    async def test_authorization_body_in_schema_order(
        self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet
    ) -> None:
        """The sale request has the XSD's element order, string values and the documented formats."""
        request = charge(amount=123456, order_reference="PO-77")
        await processor.authorize(request)
        recorded = fake.last_request
        assert recorded.content_type == "application/json"
        assert list(recorded.body) == ["createTransactionRequest"]
        body = recorded.body["createTransactionRequest"]
        assert list(body) == ["merchantAuthentication", "refId", "transactionRequest"]
        assert body["merchantAuthentication"] == {"name": fake.login_id, "transactionKey": "*" * 16}
        assert body["refId"] == request.reference
        transaction = body["transactionRequest"]
        assert list(transaction) == ["transactionType", "amount", "payment", "order", "poNumber", "billTo"]
        assert transaction["transactionType"] == "authCaptureTransaction"
        assert transaction["amount"] == "1234.56"
        credit_card = transaction["payment"]["creditCard"]
        assert list(transaction["payment"]) == ["creditCard"]
        assert credit_card == {"cardNumber": "XXXX4242", "expirationDate": "2031-12", "cardCode": "***"}
        assert list(credit_card) == ["cardNumber", "expirationDate", "cardCode"]
        assert transaction["order"] == {"invoiceNumber": request.reference, "description": "Fishing licence"}
        assert list(transaction["order"]) == ["invoiceNumber", "description"]
        assert transaction["poNumber"] == "PO-77"
        assert transaction["billTo"] == {"firstName": "Jane Q", "lastName": "Public", "zip": "94107"}
        assert list(transaction["billTo"]) == ["firstName", "lastName", "zip"]

    async def test_optional_parts_are_left_out(self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet) -> None:
        """Without description, order reference, name or postal code only the invoice number remains."""
        request = AuthorizationRequest(card(zip_code=None, name=None), 500, "usd", False, reference())
        await processor.authorize(request)
        transaction = fake.last_request.body["createTransactionRequest"]["transactionRequest"]
        assert list(transaction) == ["transactionType", "amount", "payment", "order"]
        assert transaction["order"] == {"invoiceNumber": request.reference}
        assert transaction["amount"] == "5.00"

    async def test_capture_void_and_refund_bodies(
        self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet
    ) -> None:
        """Follow-ups send only what the reference lists, in order; a refund names the card by its last four."""
        auth_id = await authorized(processor, 1000, capture=False)
        await processor.capture(auth_id, 1000, "usd")
        capture = fake.last_request.body["createTransactionRequest"]
        assert list(capture) == ["merchantAuthentication", "transactionRequest"]
        assert capture["transactionRequest"] == {
            "transactionType": "priorAuthCaptureTransaction",
            "amount": "10.00",
            "refTransId": auth_id,
        }
        assert list(capture["transactionRequest"]) == ["transactionType", "amount", "refTransId"]
        await processor.refund(auth_id, 250, "usd", "4242")
        refund = fake.last_request.body["createTransactionRequest"]["transactionRequest"]
        assert refund == {
            "transactionType": "refundTransaction",
            "amount": "2.50",
            "payment": {"creditCard": {"cardNumber": "4242", "expirationDate": "XXXX"}},
            "refTransId": auth_id,
        }
        assert list(refund) == ["transactionType", "amount", "payment", "refTransId"]
        await processor.void(auth_id)
        void = fake.last_request.body["createTransactionRequest"]["transactionRequest"]
        assert list(void.items()) == [("transactionType", "voidTransaction"), ("refTransId", auth_id)]

    async def test_fake_rejects_keys_out_of_schema_order(
        self, fake: FakeAuthorizeNet, session: aiohttp.ClientSession
    ) -> None:
        """The fake answers E00003 like the real API when elements are out of order, so it would catch a regression."""
        body = (
            '{"createTransactionRequest": {"merchantAuthentication": {"name": "x", "transactionKey": "y"},'
            ' "transactionRequest": {"amount": "1.00", "transactionType": "authOnlyTransaction"}}}'
        )
        async with session.post(
            fake.endpoint, data=body, headers={"Content-Type": "application/json"}, ssl=fake.client_ssl_context()
        ) as response:
            raw = await response.read()
        assert raw.startswith(b"\xef\xbb\xbf")
        answer = json.loads(raw.decode("utf-8-sig"))["messages"]
        assert answer["resultCode"] == "Error"
        assert answer["message"][0]["code"] == "E00003"
        assert "invalid child element 'transactionType'" in answer["message"][0]["text"]

    async def test_reference_longer_than_invoice_number_is_refused_before_sending(
        self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet
    ) -> None:
        """A reference over Authorize.Net's 20 characters is ProcessorRejected and nothing is sent."""
        with pytest.raises(ProcessorRejected):
            await processor.authorize(charge(reference="ch_" + "x" * 18))
        assert fake.total_requests == 0

    async def test_other_currencies_are_refused_before_sending(
        self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet
    ) -> None:
        """The adapter charges usd only and rejects anything else without calling Authorize.Net."""
        with pytest.raises(ProcessorRejected):
            await processor.capture("123", 100, "eur")
        assert fake.total_requests == 0


class TestFailures:
    async def test_wrong_credentials(self, fake: FakeAuthorizeNet, session: aiohttp.ClientSession) -> None:
        """A wrong transaction key is E00007 from the API and ProcessorRejected here."""
        wrong = adapter(fake, session, transaction_key="WrongKey12345678")
        with pytest.raises(ProcessorRejected, match="E00007"):
            await wrong.authorize(charge())

    async def test_inactive_account(self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet) -> None:
        """An inactive account is E00008 and ProcessorRejected."""
        fake.account_active = False
        with pytest.raises(ProcessorRejected, match="E00008"):
            await processor.void("123")

    async def test_http_500_is_unavailable(self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet) -> None:
        """An HTTP 500 is ProcessorUnavailable, and the adapter does not try again."""
        fake.fail_next(1)
        with pytest.raises(ProcessorUnavailable, match="HTTP 500"):
            await processor.authorize(charge())
        assert fake.total_requests == 1

    async def test_processing_error_card(self, processor: AuthorizeNetProcessor) -> None:
        """The processing-error test card makes the fake answer HTTP 500: ProcessorUnavailable."""
        with pytest.raises(ProcessorUnavailable):
            await processor.authorize(charge(card(PROCESSING_ERROR)))

    async def test_slow_answer_is_a_timeout(self, fake: FakeAuthorizeNet, session: aiohttp.ClientSession) -> None:
        """No answer within the timeout is ProcessorTimeout, though the gateway did process the request."""
        fake.delay = 3.0
        slow = adapter(fake, session, timeout=0.5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ProcessorTimeout):
            await slow.authorize(charge())
        assert loop.time() - started < 2.0
        assert fake.counts == {"authCaptureTransaction": 1}
        assert len(fake.transactions) == 1

    async def test_refused_connection_is_unavailable(self, session: aiohttp.ClientSession) -> None:
        """Nothing listening is ProcessorUnavailable."""
        async with FakeAuthorizeNet() as gone:
            endpoint, context = gone.endpoint, gone.client_ssl_context()
        processor = AuthorizeNetProcessor("login", "key", session=session, endpoint=endpoint, ssl=context)
        with pytest.raises(ProcessorUnavailable):
            await processor.void("123")

    async def test_redirects_are_not_followed(self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet) -> None:
        """A redirect is ProcessorUnavailable and its target is never asked."""
        fake.redirect_next(fake.endpoint)
        with pytest.raises(ProcessorUnavailable, match="redirect"):
            await processor.authorize(charge())
        assert fake.total_requests == 1

    async def test_schema_error_is_rejected(self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet) -> None:
        """An E00003 answer (the request broke the schema) is ProcessorRejected."""
        fake.answer_next_with_error("E00003", "The element 'transactionRequest' has invalid child element 'x'.")
        with pytest.raises(ProcessorRejected, match="E00003"):
            await processor.authorize(charge())

    async def test_unsuccessful_without_transaction_result(
        self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet
    ) -> None:
        """E00027 with no transactionResponse is a processing error with Authorize.Net's text."""
        fake.answer_next_with_error("E00027", "The transaction was unsuccessful.")
        result = await processor.authorize(charge())
        assert (result.outcome, result.decline_code) == (Outcome.ERROR, "processing_error")
        assert result.message == "The transaction was unsuccessful."

    async def test_gateway_system_error_is_unavailable(
        self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet
    ) -> None:
        """E00001, Authorize.Net's own failure, is ProcessorUnavailable."""
        fake.answer_next_with_error("E00001", "An error occurred during processing. Please try again.")
        with pytest.raises(ProcessorUnavailable, match="E00001"):
            await processor.void("123")


class TestTls:
    async def test_unknown_ca_fails_closed(self, fake: FakeAuthorizeNet, session: aiohttp.ClientSession) -> None:
        """With the system trust store only, the fake's certificate is refused: ProcessorUnavailable, nothing sent."""
        untrusting = AuthorizeNetProcessor(fake.login_id, fake.transaction_key, session=session, endpoint=fake.endpoint)
        with pytest.raises(ProcessorUnavailable):
            await untrusting.authorize(charge())
        assert fake.total_requests == 0

    async def test_session_without_verification_cannot_switch_it_off(self, fake: FakeAuthorizeNet) -> None:
        """A session whose connector skips verification still verifies for this adapter."""
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as lax:
            processor = AuthorizeNetProcessor(fake.login_id, fake.transaction_key, session=lax, endpoint=fake.endpoint)
            with pytest.raises(ProcessorUnavailable):
                await processor.authorize(charge())
        assert fake.total_requests == 0

    async def test_context_without_verification_is_refused(self, session: aiohttp.ClientSession) -> None:
        """An injected TLS context that does not verify certificates is a construction error."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with pytest.raises(ValueError, match="verify"):
            AuthorizeNetProcessor("login", "key", session=session, ssl=context)

    async def test_plain_http_endpoint_is_refused(self, session: aiohttp.ClientSession) -> None:
        """Only https:// endpoints are accepted."""
        with pytest.raises(ValueError, match="https"):
            AuthorizeNetProcessor("login", "key", session=session, endpoint="http://127.0.0.1/x")

    async def test_default_endpoints(self, session: aiohttp.ClientSession) -> None:
        """The sandbox is the default; both documented endpoints are exported."""
        assert SANDBOX_ENDPOINT == "https://apitest.authorize.net/xml/v1/request.api"
        assert PRODUCTION_ENDPOINT == "https://api.authorize.net/xml/v1/request.api"
        processor = AuthorizeNetProcessor("login", "key", session=session)
        assert SANDBOX_ENDPOINT in repr(processor)


class TestSecrets:
    async def test_repr_masks_credentials(self, fake: FakeAuthorizeNet, session: aiohttp.ClientSession) -> None:
        """repr() and str() show neither the login ID nor the transaction key, nor do the instance's attributes."""
        processor = AuthorizeNetProcessor(fake.login_id, fake.transaction_key, session=session)
        for text in (repr(processor), str(processor), repr(vars(processor))):
            assert fake.transaction_key not in text
            assert fake.login_id not in text

    def test_is_a_processor(self, processor: AuthorizeNetProcessor) -> None:
        """The adapter satisfies the Processor protocol under its registered name."""
        typed: Processor = processor
        assert typed.name == "authorize_net"

    async def test_no_secret_in_any_exception_or_result(
        self, fake: FakeAuthorizeNet, session: aiohttp.ClientSession
    ) -> None:
        """Across failures, even an answer that echoes what was sent, no error or result text holds card data or key."""
        processor = adapter(fake, session)
        texts: list[str] = []

        async def attempt(details: CardDetails, prepare: Any = None, target: AuthorizeNetProcessor = processor) -> None:
            if prepare is not None:
                prepare()
            try:
                result: ProcessorResult = await target.authorize(charge(details))
            except ProcessorError as error:
                texts.extend([str(error), repr(error), str(error.__cause__ or ""), repr(error.__cause__ or "")])
            else:
                texts.extend([repr(result), str(result.message)])

        echo = "The value '{cardNumber}' / '{cardCode}' / '{transactionKey}' is invalid."
        await attempt(card(VISA), lambda: fake.answer_next_with_error("E00003", echo))
        await attempt(card(AMEX, AMEX_CVC), lambda: fake.answer_next_with_error("E00027", echo))
        await attempt(card(MASTERCARD), lambda: fake.answer_next_with_error("E00001", echo))
        await attempt(card(DECLINE))
        await attempt(card(BAD_CVC))
        await attempt(card(PROCESSING_ERROR))
        await attempt(card(VISA), lambda: fake.fail_next(1))
        await attempt(card(VISA), target=adapter(fake, session, transaction_key="WrongKey12345678"))
        await attempt(card(VISA), target=AuthorizeNetProcessor("a", "b", session=session, endpoint=fake.endpoint))
        for operation in (lambda: processor.void("123"), lambda: processor.refund("123", 100, "usd", "4242")):
            fake.answer_next_with_error("E00003", f"The value '{VISA}' is invalid.")  # a card number it never got
            with pytest.raises(ProcessorRejected) as caught:
                await operation()
            texts.append(str(caught.value))
        fake.delay = 2.0
        await attempt(card(DISCOVER), target=adapter(fake, session, timeout=0.3))
        assert len(texts) >= 20
        for text in texts:
            for secret in (VISA, AMEX, MASTERCARD, DECLINE, BAD_CVC, PROCESSING_ERROR, DISCOVER, fake.transaction_key):
                assert secret not in text, text
            assert f"'{CVC}'" not in text, text
            assert f"'{AMEX_CVC}'" not in text, text

    async def test_nothing_secret_is_logged(
        self, processor: AuthorizeNetProcessor, fake: FakeAuthorizeNet, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The adapter's log records carry neither card data nor the transaction key."""
        caplog.set_level(logging.DEBUG)
        await processor.authorize(charge(card(AMEX, AMEX_CVC)))
        await processor.authorize(charge(card(DECLINE)))
        fake.fail_next(1)
        with pytest.raises(ProcessorUnavailable):
            await processor.authorize(charge())
        records = [record for record in caplog.records if "authorize_net" in record.name]
        assert records
        for record in records:
            event = record.msg
            if isinstance(event, dict):  # a structlog event: its timestamp's digits may spell a CVC ("...473731Z")
                event = {key: value for key, value in event.items() if key != "timestamp"}
            text = f"{event} {record.args}"
            for secret in (AMEX, AMEX_CVC, DECLINE, VISA, fake.transaction_key):
                assert secret not in text
