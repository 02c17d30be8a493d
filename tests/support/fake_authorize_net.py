"""A local HTTPS Authorize.Net sandbox: the real adapter is tested against it, over real TLS.

``FakeAuthorizeNet`` serves ``createTransactionRequest`` on 127.0.0.1 (random
port, a ``trustme`` certificate; ``client_ssl_context()`` trusts its CA) and
behaves like Authorize.Net's sandbox as its API reference and testing guide
describe it:

* The request is checked like the XSD checks it after the JSON-to-XML step:
  element order, unknown or repeated elements, required elements per
  transaction type, maximum lengths.  Violations answer ``E00003`` with the
  .NET schema validator's wording (which, like the real one, may echo the
  offending value).  It is stricter than the real API in two ways, on purpose:
  every leaf must be a JSON string, and ``amount`` must have exactly two decimals.
* Wrong credentials answer ``E00007``, an inactive account ``E00008``.
* Answers have the real shape: a UTF-8 byte order mark, then
  ``transactionResponse`` (responseCode, authCode, avsResultCode, cvvResultCode,
  cavvResultCode, transId, refTransID, transHash, testRequest, accountNumber,
  accountType, messages or errors, ...), the echoed ``refId`` and ``messages``
  (``Ok``/I00001, or ``Error``/E00027 for declines and errors).

Outcomes by card number (only well-known public test numbers): 4242424242424242,
5555555555554444, 378282246310005, 4111111111111111, 6011111111111117 and any
other Luhn-valid number approve; 4000000000000002 declines (reason 2);
4000000000009995 declines with reason 2 too (Authorize.Net has no
insufficient-funds code) and a distinctive text; 4000000000009987 reason 4
(pick up card); 4000000000000069 reason 8 (expired, responseCode 3);
4000000000000127 reason 44 (card code mismatch, cvvResultCode N);
4000000000000119 an HTTP 500.  From the sandbox testing guide: ``billTo.zip``
46282 declines (reason 2), other test ZIPs set the AVS letter, card codes
900-904 set the CVV letter.  An expiry date in the past is reason 8, a
repeated identical authorization within ``duplicate_window`` seconds reason 11.
``hold_for_review = True`` answers approvals with responseCode 4 / reason 253,
like a Fraud Detection Suite "authorize and hold" filter.

Transactions keep state: an authorization can be captured once for at most
its amount (a second capture is approved with reason 311 and changes
nothing, as the real gateway does), voided while unsettled, an authorization
or a captured sale alike (reason 310 when already voided; a settled one is no
longer in the unsettled list and gets the real gateway's reason 16, "The
transaction cannot be found"), and a captured charge refunded once settled, in parts,
never beyond the captured amount (reasons 54 and 55).  Captures and refunds
settle at once unless ``auto_settle`` is False; then ``settle()`` does it.

Card data: the fake keeps no card number.  Duplicate detection uses a salted
hash, transactions keep the last four digits, and ``requests`` records each
request with the card number, card code and transaction key masked.  Nothing
is logged.  Test switches: ``delay`` (seconds before each answer, after the
transaction is processed), ``fail_next(n)`` (HTTP 500 without processing),
``redirect_next(url)``, ``answer_next_with_error(code, text)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import re
import secrets
import ssl
import string
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import trustme
from aiohttp import web

API_PATH = "/xml/v1/request.api"
NAMESPACE = "AnetApi/xml/v1/schema/AnetApiSchema.xsd"
BOM = "\ufeff".encode()

LOGIN_ID = "cardvault-fake"
TRANSACTION_KEY = "Fk7vQ2xLm9Tz4Rb8"

APPROVED_TEXT = "This transaction has been approved."
DECLINED_TEXT = "This transaction has been declined."
INSUFFICIENT_FUNDS_TEXT = "This transaction has been declined. (Insufficient funds.)"
HELD_TEXT = "Your order has been received. Thank you for your business!"
NOT_FOUND_TEXT = "The transaction cannot be found."

# card number -> (responseCode, reason code, text, cvvResultCode or None to keep the card-code result)
CARD_OUTCOMES: dict[str, tuple[str, str, str, str | None]] = {
    "4000000000000002": ("2", "2", DECLINED_TEXT, None),
    "4000000000009995": ("2", "2", INSUFFICIENT_FUNDS_TEXT, None),
    "4000000000009987": ("2", "4", DECLINED_TEXT, None),
    "4000000000000069": ("3", "8", "The credit card has expired.", None),
    "4000000000000127": ("2", "44", DECLINED_TEXT, "N"),
}
HTTP_500_CARD = "4000000000000119"
DECLINE_ZIP = "46282"
AVS_BY_ZIP = {
    "46201": "A",
    "46203": "E",
    "46204": "G",
    "46205": "N",
    "46206": "P",
    "46207": "R",
    "46208": "S",
    "46209": "U",
    "46211": "W",
    "46214": "X",
    "46217": "Z",
}
CVV_BY_CODE = {"900": "M", "901": "N", "902": "S", "903": "U", "904": "P"}

_ORDER = {
    "createTransactionRequest": ("merchantAuthentication", "refId", "transactionRequest"),
    "merchantAuthentication": ("name", "transactionKey"),
    "transactionRequest": (
        "transactionType",
        "amount",
        "currencyCode",
        "payment",
        "profile",
        "solution",
        "callId",
        "authCode",
        "refTransId",
        "splitTenderId",
        "order",
        "lineItems",
        "tax",
        "duty",
        "shipping",
        "taxExempt",
        "poNumber",
        "customer",
        "billTo",
        "shipTo",
        "customerIP",
        "cardholderAuthentication",
        "retail",
        "employeeId",
        "transactionSettings",
        "userFields",
    ),
    "payment": ("creditCard",),  # the fake takes cards only
    "creditCard": ("cardNumber", "expirationDate", "cardCode", "isPaymentToken", "cryptogram"),
    "order": ("invoiceNumber", "description"),
    "billTo": (
        "firstName",
        "lastName",
        "company",
        "address",
        "city",
        "state",
        "zip",
        "country",
        "phoneNumber",
        "faxNumber",
        "email",
    ),
}
_REQUIRED = {
    "createTransactionRequest": ("merchantAuthentication", "transactionRequest"),
    "merchantAuthentication": ("name", "transactionKey"),
    "transactionRequest": ("transactionType",),
    "payment": ("creditCard",),
    "creditCard": ("cardNumber", "expirationDate"),
}
_MAX_LENGTH = {
    "name": 25,
    "transactionKey": 16,
    "refId": 20,
    "cardNumber": 16,
    "expirationDate": 7,
    "invoiceNumber": 20,
    "description": 255,
    "poNumber": 25,
    "firstName": 50,
    "lastName": 50,
    "company": 50,
    "address": 60,
    "city": 40,
    "state": 40,
    "zip": 20,
    "country": 60,
}
_TRANSACTION_TYPES = (
    "authOnlyTransaction",
    "authCaptureTransaction",
    "priorAuthCaptureTransaction",
    "voidTransaction",
    "refundTransaction",
)
_SECRET_KEYS = ("cardNumber", "cardCode", "transactionKey")


class _SchemaError(Exception):
    """The request does not validate against the XSD: answered with E00003."""


@dataclass
class _Reply:
    body: dict[str, Any] | None = None
    status: int = 200
    location: str | None = None

    def response(self) -> web.Response:
        if self.status == 500:
            return web.Response(status=500, text="<html><body><h1>500 Internal Server Error</h1></body></html>")
        if self.location is not None:
            return web.Response(status=307, headers={"Location": self.location})
        payload = BOM + json.dumps(self.body).encode()
        return web.Response(body=payload, content_type="application/json", charset="utf-8")


@dataclass
class FakeTransaction:
    """One transaction the fake remembers; ``status`` uses Authorize.Net's transactionStatus names."""

    trans_id: str
    transaction_type: str
    amount: int  # cents
    last4: str
    account_type: str
    auth_code: str
    status: str
    captured: int = 0
    refunded: int = 0
    parent: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """A request as received, card number, card code and transaction key masked."""

    content_type: str
    body: Any
    transaction_type: str | None


@dataclass
class _Context:
    """What one request's answer needs to know."""

    ref_id: str | None = None
    secrets: dict[str, str] = field(default_factory=dict)


class FakeAuthorizeNet:
    """The fake server; ``async with FakeAuthorizeNet() as fake:`` starts and stops it."""

    def __init__(self, login_id: str = LOGIN_ID, transaction_key: str = TRANSACTION_KEY) -> None:
        self.login_id = login_id
        self.transaction_key = transaction_key
        self.account_active = True
        self.hold_for_review = False
        self.auto_settle = True
        self.duplicate_window = 120.0
        self.delay = 0.0
        self.counts: Counter[str] = Counter()
        self.total_requests = 0
        self.requests: deque[RecordedRequest] = deque(maxlen=100)
        self.transactions: dict[str, FakeTransaction] = {}
        self._ca = trustme.CA()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._stopping = asyncio.Event()
        self._fail_next = 0
        self._redirect_next: str | None = None
        self._error_next: tuple[str, str] | None = None
        self._salt = secrets.token_bytes(16)
        self._recent: dict[str, float] = {}
        self._next_id = 40_000_000_000 + secrets.randbelow(1_000_000) * 1000

    # --- lifecycle and switches -------------------------------------------------

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> Self:
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post(API_PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=server_context)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self._port}{API_PATH}"

    def client_ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this fake's CA (and nothing else)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates and host names
        self._ca.configure_trust(context)
        return context

    def write_ca_pem(self, path: Path) -> Path:
        """The fake's CA certificate as a PEM file, for the service's ``processors.ca_file``."""
        self._ca.cert_pem.write_to_path(str(path))
        return path

    def fail_next(self, count: int = 1) -> None:
        """Answer the next ``count`` requests with HTTP 500 without processing them."""
        self._fail_next += count

    def redirect_next(self, location: str) -> None:
        self._redirect_next = location

    def answer_next_with_error(self, code: str, text: str) -> None:
        """Answer the next request with an API-level error; ``{cardNumber}``, ``{cardCode}``, ``{transactionKey}``
        in ``text`` are replaced by what the request sent, as the real schema errors echo values."""
        self._error_next = (code, text)

    def settle(self) -> None:
        """Run the settlement batch: every captured charge and refund becomes settled."""
        for transaction in self.transactions.values():
            if transaction.status == "capturedPendingSettlement":
                transaction.status = "settledSuccessfully"
            elif transaction.status == "refundPendingSettlement":
                transaction.status = "refundSettledSuccessfully"

    @property
    def last_request(self) -> RecordedRequest:
        return self.requests[-1]

    # --- the endpoint -------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        self.total_requests += 1
        raw = await request.read()
        reply = self._answer(request.headers.get("Content-Type", ""), raw)
        if self.delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.delay)
        return reply.response()

    def _answer(self, content_type: str, raw: bytes) -> _Reply:
        """Everything synchronous, so concurrent requests see consistent state."""
        context = _Context()
        try:
            document = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
        except (ValueError, _SchemaError):
            return _api_error(None, "E00003", "An error occurred while parsing the JSON request.")
        kind = _transaction_type(document)
        self.requests.append(RecordedRequest(content_type, _masked(document), kind))
        if kind is not None:
            self.counts[kind] += 1
        if self._fail_next > 0:
            self._fail_next -= 1
            return _Reply(status=500)
        if self._redirect_next is not None:
            location, self._redirect_next = self._redirect_next, None
            return _Reply(location=location)
        if content_type.split(";")[0].strip().lower() != "application/json":
            return _api_error(None, "E00002", "The content-type specified is not supported.")
        try:
            body = _validate(document, context)
        except _SchemaError as error:
            return _api_error(context.ref_id, "E00003", str(error))
        if self._error_next is not None:
            code, text = self._error_next
            self._error_next = None
            return _api_error(context.ref_id, code, _fill(text, context.secrets))
        auth = body["merchantAuthentication"]
        if auth["name"] != self.login_id or auth["transactionKey"] != self.transaction_key:
            return _api_error(
                context.ref_id, "E00007", "User authentication failed due to invalid authentication values."
            )
        if not self.account_active:
            return _api_error(
                context.ref_id, "E00008", "User authentication failed. The account or API user is inactive."
            )
        transaction = body["transactionRequest"]
        handler: Callable[[dict[str, Any], _Context], _Reply] = {
            "authOnlyTransaction": self._authorize,
            "authCaptureTransaction": self._authorize,
            "priorAuthCaptureTransaction": self._capture,
            "voidTransaction": self._void,
            "refundTransaction": self._refund,
        }[transaction["transactionType"]]
        return handler(transaction, context)

    # --- transaction types ------------------------------------------------------

    def _authorize(self, request: dict[str, Any], context: _Context) -> _Reply:
        missing = _missing(request, ("amount", "payment"))
        if missing:
            return _missing_reply(missing, context)
        card = request["payment"]["creditCard"]
        number, expiry = card["cardNumber"], card["expirationDate"]
        amount = _cents(request["amount"])
        if amount == 0:
            return _error(context, "5", "A valid amount is required.")
        if not (13 <= len(number) <= 16 and number.isdigit() and _luhn_valid(number)):
            return _error(context, "6", "The credit card number is invalid.")
        if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", expiry):
            return _error(context, "7", "The credit card expiration date is invalid.")
        last4, account_type = number[-4:], _account_type(number)
        shown = {"account_number": "XXXX" + last4, "account_type": account_type}
        today = dt.date.today()
        if (int(expiry[:4]), int(expiry[5:])) < (today.year, today.month):
            return _error(context, "8", "The credit card has expired.", **shown)
        if number == HTTP_500_CARD:
            return _Reply(status=500)
        if self._is_duplicate(request, number):
            return _error(context, "11", "A duplicate transaction has been submitted.", **shown)
        zip_code = request.get("billTo", {}).get("zip", "")
        avs = AVS_BY_ZIP.get(zip_code, "Y") if zip_code else "P"
        code = card.get("cardCode")
        cvv = CVV_BY_CODE.get(code, "M") if code else ""
        trans_id = self._new_id()
        outcome = CARD_OUTCOMES.get(number)
        if outcome is None and zip_code == DECLINE_ZIP:
            outcome = ("2", "2", DECLINED_TEXT, None)
        if outcome is not None:
            response_code, reason, text, forced_cvv = outcome
            if response_code == "3":
                return _error(context, reason, text, **shown)
            self.transactions[trans_id] = FakeTransaction(
                trans_id, request["transactionType"], amount, last4, account_type, "", "declined"
            )
            return _transaction_reply(
                context,
                "2",
                reason,
                text,
                trans_id=trans_id,
                auth_code="000000",
                avs=avs,
                cvv=forced_cvv or cvv,
                **shown,
            )
        auth_code = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(6))
        captured = request["transactionType"] == "authCaptureTransaction"
        if self.hold_for_review:
            status = "FDSAuthorizedPendingReview"
        elif captured:
            status = self._captured_status()
        else:
            status = "authorizedPendingCapture"
        self.transactions[trans_id] = FakeTransaction(
            trans_id,
            request["transactionType"],
            amount,
            last4,
            account_type,
            auth_code,
            status,
            captured=amount if captured and not self.hold_for_review else 0,
        )
        response_code, reason, text = ("4", "253", HELD_TEXT) if self.hold_for_review else ("1", "1", APPROVED_TEXT)
        return _transaction_reply(
            context, response_code, reason, text, trans_id=trans_id, auth_code=auth_code, avs=avs, cvv=cvv, **shown
        )

    def _capture(self, request: dict[str, Any], context: _Context) -> _Reply:
        original = self._referenced(request, context)
        if isinstance(original, _Reply):
            return original
        if original.transaction_type not in ("authOnlyTransaction", "authCaptureTransaction") or original.status in (
            "declined",
            "voided",
            "FDSAuthorizedPendingReview",
        ):
            return _error(context, "16", NOT_FOUND_TEXT, ref_trans_id=original.trans_id)
        if original.status != "authorizedPendingCapture":
            return self._about(original, context, "1", "311", "This transaction has already been captured.")
        amount = _cents(request["amount"]) if "amount" in request else original.amount
        if amount == 0:
            return _error(context, "5", "A valid amount is required.")
        if amount > original.amount:
            return _error(
                context,
                "47",
                "The amount requested for settlement cannot be greater than the original amount authorized.",
                ref_trans_id=original.trans_id,
            )
        original.captured = amount
        original.status = self._captured_status()
        return self._about(original, context, "1", "1", APPROVED_TEXT)

    def _void(self, request: dict[str, Any], context: _Context) -> _Reply:
        original = self._referenced(request, context)
        if isinstance(original, _Reply):
            return original
        if original.status == "voided":
            return self._about(original, context, "1", "310", "This transaction has already been voided.")
        if original.status not in (
            "authorizedPendingCapture",
            "capturedPendingSettlement",
            "refundPendingSettlement",
            "FDSAuthorizedPendingReview",
        ):
            return _error(context, "16", NOT_FOUND_TEXT, ref_trans_id=original.trans_id)
        if original.parent is not None:
            self.transactions[original.parent].refunded -= original.amount
        original.status = "voided"
        return self._about(original, context, "1", "1", APPROVED_TEXT)

    def _refund(self, request: dict[str, Any], context: _Context) -> _Reply:
        missing = _missing(request, ("amount", "payment"))
        if missing:
            return _missing_reply(missing, context)
        original = self._referenced(request, context)
        if isinstance(original, _Reply):
            return original
        card = request["payment"]["creditCard"]
        number, expiry = card["cardNumber"], card["expirationDate"]
        if not re.fullmatch(r"(XXXX)?\d{4}", number) or not re.fullmatch(r"XXXX|\d{4}-\d{2}", expiry):
            return _error(context, "6", "The credit card number is invalid.")
        unsuitable = original.status != "settledSuccessfully" or number[-4:] != original.last4
        if unsuitable:
            text = "The referenced transaction does not meet the criteria for issuing a credit."
            return _error(context, "54", text, ref_trans_id=original.trans_id)
        amount = _cents(request["amount"])
        if amount == 0:
            return _error(context, "5", "A valid amount is required.")
        if original.refunded + amount > original.captured:
            text = "The sum of credits against the referenced transaction would exceed original debit amount."
            return _error(context, "55", text, ref_trans_id=original.trans_id)
        trans_id = self._new_id()
        status = "refundSettledSuccessfully" if self.auto_settle else "refundPendingSettlement"
        self.transactions[trans_id] = FakeTransaction(
            trans_id,
            "refundTransaction",
            amount,
            original.last4,
            original.account_type,
            "",
            status,
            parent=original.trans_id,
        )
        original.refunded += amount
        return _transaction_reply(
            context,
            "1",
            "1",
            APPROVED_TEXT,
            trans_id=trans_id,
            ref_trans_id=original.trans_id,
            account_number="XXXX" + original.last4,
            account_type=original.account_type,
        )

    # --- helpers ------------------------------------------------------------

    def _referenced(self, request: dict[str, Any], context: _Context) -> FakeTransaction | _Reply:
        ref = request.get("refTransId", "")
        if not ref.isdigit():
            return _error(context, "15", "The transaction ID is invalid or not present.")
        original = self.transactions.get(ref)
        if original is None:
            return _error(context, "16", NOT_FOUND_TEXT, ref_trans_id=ref)
        return original

    def _about(
        self, original: FakeTransaction, context: _Context, response_code: str, reason: str, text: str
    ) -> _Reply:
        """A capture or void answer: Authorize.Net reports the original transaction's id."""
        return _transaction_reply(
            context,
            response_code,
            reason,
            text,
            trans_id=original.trans_id,
            ref_trans_id=original.trans_id,
            auth_code=original.auth_code,
            account_number="XXXX" + original.last4,
            account_type=original.account_type,
        )

    def _captured_status(self) -> str:
        return "settledSuccessfully" if self.auto_settle else "capturedPendingSettlement"

    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def _is_duplicate(self, request: dict[str, Any], number: str) -> bool:
        """Same type, card, expiry, amount, invoice number and bill-to within the window (by salted hash only)."""
        if self.duplicate_window <= 0:
            return False
        card = request["payment"]["creditCard"]
        fields = [
            request["transactionType"],
            number,
            card["expirationDate"],
            request["amount"],
            request.get("order", {}).get("invoiceNumber", ""),
            json.dumps(request.get("billTo", {}), sort_keys=True),
        ]
        key = hashlib.sha256(self._salt + "\x1f".join(fields).encode()).hexdigest()
        now = time.monotonic()
        self._recent = {k: t for k, t in self._recent.items() if now - t < self.duplicate_window}
        if key in self._recent:
            return True
        self._recent[key] = now
        return False


# --- validation -----------------------------------------------------------------


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _SchemaError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _transaction_type(document: object) -> str | None:
    try:
        kind = document["createTransactionRequest"]["transactionRequest"]["transactionType"]  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    return kind if isinstance(kind, str) else None


def _validate(document: Any, context: _Context) -> dict[str, Any]:
    if not isinstance(document, dict) or list(document) != ["createTransactionRequest"]:
        raise _SchemaError("The name of the requested API method is invalid.")
    body: dict[str, Any] = document["createTransactionRequest"]
    if isinstance(body, dict) and isinstance(body.get("refId"), str):
        context.ref_id = body["refId"]
    _element("createTransactionRequest", body, context)
    transaction = body["transactionRequest"]
    if transaction["transactionType"] not in _TRANSACTION_TYPES:
        raise _SchemaError(f"The value '{transaction['transactionType']}' is not a valid transaction type.")
    amount = transaction.get("amount")
    if amount is not None and not re.fullmatch(r"\d{1,13}\.\d{2}", amount):
        raise _SchemaError(
            f"The '{NAMESPACE}:amount' element is invalid - The value '{amount}' is invalid according to its "
            "datatype 'Decimal' - The string was not recognized as a valid decimal with two places."
        )
    code = transaction.get("payment", {}).get("creditCard", {}).get("cardCode")
    if code is not None and not re.fullmatch(r"\d{3,4}", code):
        raise _SchemaError(
            f"The '{NAMESPACE}:cardCode' element is invalid - The value '{code}' is invalid according to its "
            "datatype 'cardCode' - The Pattern constraint failed."
        )
    return body


def _element(name: str, value: Any, context: _Context) -> None:
    """Check one element like the XSD does: order, known children, required children, string leaves."""
    order = _ORDER.get(name)
    if order is None:
        if not isinstance(value, str):
            raise _SchemaError(f"The '{NAMESPACE}:{name}' element is invalid - a string is expected.")
        limit = _MAX_LENGTH.get(name)
        if name in _SECRET_KEYS:
            context.secrets[name] = value
        if limit is not None and len(value) > limit:
            raise _SchemaError(
                f"The '{NAMESPACE}:{name}' element is invalid - The value '{value}' is invalid according to its "
                "datatype 'String' - The actual length is greater than the MaxLength value."
            )
        return
    if not isinstance(value, dict):
        raise _SchemaError(f"The element '{name}' in namespace '{NAMESPACE}' has invalid content.")
    position = -1
    for child in value:
        index = order.index(child) if child in order else -1
        if index <= position:
            expected = ", ".join(order[position + 1 :])
            raise _SchemaError(
                f"The element '{name}' in namespace '{NAMESPACE}' has invalid child element '{child}' in namespace "
                f"'{NAMESPACE}'. List of possible elements expected: '{expected}' in namespace '{NAMESPACE}'."
            )
        position = index
        _element(child, value[child], context)
    for required in _REQUIRED.get(name, ()):
        if required not in value:
            raise _SchemaError(
                f"The element '{name}' in namespace '{NAMESPACE}' has incomplete content. List of possible elements "
                f"expected: '{required}' in namespace '{NAMESPACE}'."
            )


def _missing(request: Mapping[str, Any], names: tuple[str, ...]) -> str | None:
    return next((name for name in names if name not in request), None)


def _missing_reply(name: str, context: _Context) -> _Reply:
    if name == "amount":
        return _error(context, "5", "A valid amount is required.")
    return _error(context, "33", "Credit card number cannot be left blank.")


def _masked(value: Any) -> Any:
    """A copy with card number (to its last four), card code and transaction key masked; same shape and types."""
    if isinstance(value, dict):
        return {key: _mask_leaf(key, item) if key in _SECRET_KEYS else _masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    return value


def _mask_leaf(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return "***"
    if key == "cardNumber" and len(value) > 4:
        return "XXXX" + value[-4:]
    if key == "cardNumber":
        return value
    return "*" * len(value)


def _fill(text: str, values: Mapping[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def _cents(amount: str) -> int:
    whole, _, fraction = amount.partition(".")
    return int(whole) * 100 + int(fraction)


def _luhn_valid(number: str) -> bool:
    total = 0
    for position, digit in enumerate(reversed(number)):
        value = int(digit) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _account_type(number: str) -> str:
    if number.startswith(("34", "37")):
        return "AmericanExpress"
    if number.startswith(("30", "36", "38")):
        return "DinersClub"
    if number.startswith("35"):
        return "JCB"
    if number.startswith("4"):
        return "Visa"
    if number.startswith(("5", "2")):
        return "MasterCard"
    return "Discover"


# --- answers ------------------------------------------------------------------


def _api_error(ref_id: str | None, code: str, text: str) -> _Reply:
    body: dict[str, Any] = {} if ref_id is None else {"refId": ref_id}
    body["messages"] = {"resultCode": "Error", "message": [{"code": code, "text": text}]}
    return _Reply(body)


def _error(context: _Context, reason: str, text: str, *, ref_trans_id: str = "", **shown: str) -> _Reply:
    """responseCode 3: the gateway could not process the transaction."""
    return _transaction_reply(context, "3", reason, text, ref_trans_id=ref_trans_id, **shown)


def _transaction_reply(
    context: _Context,
    response_code: str,
    reason: str,
    text: str,
    *,
    trans_id: str = "0",
    ref_trans_id: str = "",
    auth_code: str = "",
    avs: str = "P",
    cvv: str = "",
    account_number: str = "",
    account_type: str = "",
) -> _Reply:
    transaction: dict[str, Any] = {
        "responseCode": response_code,
        "authCode": auth_code,
        "avsResultCode": avs,
        "cvvResultCode": cvv,
        "cavvResultCode": "",
        "transId": trans_id,
        "refTransID": ref_trans_id,
        "transHash": "",
        "testRequest": "0",
        "accountNumber": account_number,
        "accountType": account_type,
    }
    if response_code in ("1", "4"):
        transaction["messages"] = [{"code": reason, "description": text}]
    else:
        transaction["errors"] = [{"errorCode": reason, "errorText": text}]
    transaction["transHashSha2"] = ""
    transaction["SupplementalDataQualificationIndicator"] = 0
    body: dict[str, Any] = {"transactionResponse": transaction}
    if context.ref_id is not None:
        body["refId"] = context.ref_id
    ok = response_code in ("1", "4")
    body["messages"] = {
        "resultCode": "Ok" if ok else "Error",
        "message": [
            {"code": "I00001", "text": "Successful."}
            if ok
            else {"code": "E00027", "text": "The transaction was unsuccessful."}
        ],
    }
    return _Reply(body)
