"""The Authorize.Net adapter: cards go from the vault straight to Authorize.Net, never through an agency.

An agency whose merchant account is at Authorize.Net holds only tokens; this
module is the one place where the card number and CVC of such a charge leave
the vault.  It speaks the JSON flavour of Authorize.Net's API
(``createTransactionRequest``: ``authOnlyTransaction``, ``authCaptureTransaction``,
``priorAuthCaptureTransaction``, ``voidTransaction``, ``refundTransaction``)
as its public API reference describes it.

Authorize.Net converts the JSON to XML and validates it against its XSD, so
every object is built in the schema's element order (``merchantAuthentication,
refId, transactionRequest``; ``transactionType, amount, payment, refTransId,
order, poNumber, billTo``), and length limits are checked here, before any
card data is sent.  Answers start with a UTF-8 byte order mark.  Declines and
errors come back as HTTP 200 with ``messages.resultCode == "Error"``.

How answers map (the README repeats the tables):

* ``transactionResponse.responseCode`` 1 approved, 2 declined, 3 error, 4 held
  for review.  An approval with reason 310 or 311 ("already voided" / "already
  captured") repeats something that already happened and stays approved.
* The response reason code (``errors[0].errorCode``) picks the decline code,
  see ``DECLINE_CODES``.  A reason listed there is a decline whatever the
  responseCode (an expired card is responseCode 3 at Authorize.Net, but the
  card is the problem); any other reason is ``generic_decline`` under
  responseCode 2 and ``Outcome.ERROR`` / ``processing_error`` under 3 (a capture
  beyond the authorization, a refund before settlement, an unknown transaction).
* ``cvvResultCode``: see ``CVC_CHECKS``; an empty code is ``unchecked`` when we
  sent no CVC and ``unavailable`` when we did.
* No transaction result: E00007/E00008 and the other credential errors, and
  request-format errors, raise ``ProcessorRejected``; E00001 (their system
  error) ``ProcessorUnavailable``.
* HTTP 5xx, refused connections and failed TLS verification raise
  ``ProcessorUnavailable``; no answer within ``timeout``, or a connection lost
  after the request went out, ``ProcessorTimeout`` (the charge may have happened).

The adapter never retries, follows no redirects and always verifies TLS.
Card data is revealed only into the request body; credentials and card data
never reach a log line, an exception message or a ``repr``; processor texts are
scrubbed of both before they are passed on.
"""

from __future__ import annotations

import functools
import json
import ssl as ssl_module
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Final, NoReturn

import aiohttp
import structlog
from yarl import URL

from service.adapters.processors.authorize_net_answers import (
    CREDENTIAL_ERRORS,
    SERVER_ERRORS,
    UNSUCCESSFUL,
    first_of,
    parse_answer,
    scrub,
    text_of,
    transaction_result,
)
from service.adapters.processors.base import (
    TRANSACTION_SETTLED,
    AuthorizationRequest,
    CardDetails,
    Outcome,
    ProcessorRejected,
    ProcessorResult,
    ProcessorTimeout,
    ProcessorUnavailable,
    format_amount,
)

#: The reason code Authorize.Net answers a void of a settled transaction with ("cannot be found").
VOID_OF_SETTLED_REASON: Final = "16"
SANDBOX_ENDPOINT: Final = "https://apitest.authorize.net/xml/v1/request.api"
PRODUCTION_ENDPOINT: Final = "https://api.authorize.net/xml/v1/request.api"

#: Response reason code -> our decline code.
_MAX_LOGIN_ID: Final = 25
_MAX_TRANSACTION_KEY: Final = 16
_MAX_REFERENCE: Final = 20  # refId and order.invoiceNumber
_MAX_PO_NUMBER: Final = 25
_MAX_DESCRIPTION: Final = 255
_MAX_NAME: Final = 50
_MAX_ZIP: Final = 20
_MAX_ANSWER_BYTES: Final = 1 << 20
_HEADERS: Final = MappingProxyType({"Content-Type": "application/json", "Accept": "application/json"})

log = structlog.get_logger("cardvault.processors.authorize_net")


class _Credentials:
    """API login ID and transaction key; prints masked and refuses pickling."""

    __slots__ = ("login_id", "transaction_key")

    def __init__(self, login_id: str, transaction_key: str) -> None:
        if not login_id or len(login_id) > _MAX_LOGIN_ID:
            raise ValueError(f"the Authorize.Net API login ID must have 1 to {_MAX_LOGIN_ID} characters")
        if not transaction_key or len(transaction_key) > _MAX_TRANSACTION_KEY:
            raise ValueError(f"the Authorize.Net transaction key must have 1 to {_MAX_TRANSACTION_KEY} characters")
        self.login_id = login_id
        self.transaction_key = transaction_key

    def __repr__(self) -> str:
        return "_Credentials(login_id='***', transaction_key='***')"

    def __reduce__(self) -> NoReturn:
        raise TypeError("credentials cannot be pickled")


class AuthorizeNetProcessor:
    """One Authorize.Net merchant account, spoken to through ``session``; implements ``Processor``."""

    def __init__(
        self,
        login_id: str,
        transaction_key: str,
        *,
        session: aiohttp.ClientSession,
        endpoint: str = SANDBOX_ENDPOINT,
        timeout: float = 25.0,
        ssl: ssl_module.SSLContext | None = None,
        name: str = "authorize_net",
    ) -> None:
        url = URL(endpoint)
        if url.scheme != "https" or not url.host:
            raise ValueError("the Authorize.Net endpoint must be an https:// URL")
        if not timeout > 0:
            raise ValueError("the timeout must be positive")
        self.name = name
        self._credentials = _Credentials(login_id, transaction_key)
        self._session = session
        self._endpoint = str(url)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl = _verifying_context(ssl)

    def __repr__(self) -> str:
        return (
            f"AuthorizeNetProcessor(name={self.name!r}, login_id='***', transaction_key='***', "
            f"endpoint={self._endpoint!r}, timeout={self._timeout.total})"
        )

    # --- the Processor protocol ---------------------------------------------

    async def authorize(self, request: AuthorizationRequest) -> ProcessorResult:
        """``authCaptureTransaction`` when ``request.capture``, else ``authOnlyTransaction``."""
        _check_currency(request.currency)
        if len(request.reference) > _MAX_REFERENCE:
            raise ProcessorRejected(f"the charge reference is longer than Authorize.Net's {_MAX_REFERENCE} characters")
        card = request.card
        transaction: dict[str, object] = {
            "transactionType": "authCaptureTransaction" if request.capture else "authOnlyTransaction",
            "amount": _amount(request.amount),
            "payment": {"creditCard": _credit_card(card)},
        }
        order = {"invoiceNumber": request.reference}
        if request.description:
            order["description"] = request.description[:_MAX_DESCRIPTION]
        transaction["order"] = order
        if request.order_reference and len(request.order_reference) <= _MAX_PO_NUMBER:
            transaction["poNumber"] = request.order_reference
        bill_to = _bill_to(card)
        if bill_to:
            transaction["billTo"] = bill_to
        secrets = (card.number.reveal(), card.cvc.reveal() if card.cvc else "")
        answer = await self._send(transaction, ref_id=request.reference, secrets=secrets)
        return self._interpret(answer, secrets=secrets, cvc_sent=card.cvc is not None)

    async def capture(self, transaction_id: str, amount: int, currency: str) -> ProcessorResult:
        """``priorAuthCaptureTransaction`` for ``amount`` (at most the authorized amount)."""
        _check_currency(currency)
        transaction = {
            "transactionType": "priorAuthCaptureTransaction",
            "amount": _amount(amount),
            "refTransId": transaction_id,
        }
        return self._interpret(await self._send(transaction, ref_id=None, secrets=()), secrets=(), cvc_sent=None)

    async def void(self, transaction_id: str) -> ProcessorResult:
        """``voidTransaction``: cancels an unsettled transaction, an authorization or a capture not yet settled.

        The gateway voids only what is still in the unsettled list; a settled transaction is answered with
        reason 16, "The transaction cannot be found", which we report as ``transaction_settled`` (our
        transaction ids come from approvals, so it exists: it has left the unsettled list).
        """
        transaction = {"transactionType": "voidTransaction", "refTransId": transaction_id}
        answer = await self._send(transaction, ref_id=None, secrets=())
        result = self._interpret(answer, secrets=(), cvc_sent=None)
        response = answer.get("transactionResponse")
        reason = text_of(first_of(response.get("errors")).get("errorCode")) if isinstance(response, Mapping) else ""
        if not result.approved and reason == VOID_OF_SETTLED_REASON:
            return replace(result, decline_code=TRANSACTION_SETTLED)
        return result

    async def refund(self, transaction_id: str, amount: int, currency: str, card_last4: str) -> ProcessorResult:
        """``refundTransaction`` against a settled charge; Authorize.Net wants only the last four digits."""
        _check_currency(currency)
        if not (len(card_last4) == 4 and card_last4.isascii() and card_last4.isdigit()):
            raise ValueError("card_last4 must be four digits")
        transaction = {
            "transactionType": "refundTransaction",
            "amount": _amount(amount),
            "payment": {"creditCard": {"cardNumber": card_last4, "expirationDate": "XXXX"}},
            "refTransId": transaction_id,
        }
        return self._interpret(await self._send(transaction, ref_id=None, secrets=()), secrets=(), cvc_sent=None)

    # --- the wire -----------------------------------------------------------

    async def _send(
        self, transaction: Mapping[str, object], *, ref_id: str | None, secrets: Sequence[str]
    ) -> Mapping[str, Any]:
        """POST one request, once; the parsed answer, or a ``ProcessorError``."""
        credentials = self._credentials
        envelope: dict[str, object] = {
            "merchantAuthentication": {"name": credentials.login_id, "transactionKey": credentials.transaction_key}
        }
        if ref_id is not None:
            envelope["refId"] = ref_id
        envelope["transactionRequest"] = transaction
        body = json.dumps({"createTransactionRequest": envelope}, ensure_ascii=False).encode()
        kind = str(transaction["transactionType"])
        started = time.monotonic()
        try:
            async with self._session.post(
                self._endpoint,
                data=body,
                headers=_HEADERS,
                timeout=self._timeout,
                ssl=self._ssl,
                allow_redirects=False,
            ) as response:
                status = response.status
                raw = await _read_limited(response)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            self._log(kind, started, error=type(exc).__name__)
            raise ProcessorUnavailable(f"could not connect to Authorize.Net ({type(exc).__name__})") from exc
        except TimeoutError as exc:
            self._log(kind, started, error="timeout")
            raise ProcessorTimeout(
                f"Authorize.Net did not answer within {self._timeout.total} s; the outcome is unknown"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            self._log(kind, started, error=type(exc).__name__)
            raise ProcessorTimeout(
                f"the connection to Authorize.Net broke before an answer ({type(exc).__name__}); the outcome is unknown"
            ) from exc
        self._log(kind, started, status=status)
        if status >= 500:
            raise ProcessorUnavailable(f"Authorize.Net answered HTTP {status}")
        if 300 <= status < 400:
            raise ProcessorUnavailable(f"Authorize.Net answered with a redirect (HTTP {status}), not followed")
        if status >= 400 or status < 200:
            raise ProcessorRejected(f"Authorize.Net answered HTTP {status}")
        return parse_answer(raw)

    def _log(self, kind: str, started: float, **fields: object) -> None:
        elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        log.info("processor_call", processor=self.name, transaction_type=kind, elapsed_ms=elapsed_ms, **fields)

    def _interpret(
        self, answer: Mapping[str, Any], *, secrets: Sequence[str], cvc_sent: bool | None
    ) -> ProcessorResult:
        hidden = (*secrets, self._credentials.transaction_key)
        transaction = answer.get("transactionResponse")
        if isinstance(transaction, Mapping) and text_of(transaction.get("responseCode")) in {"1", "2", "3", "4"}:
            result = transaction_result(transaction, hidden, cvc_sent)
            log.info(
                "processor_result", processor=self.name, outcome=str(result.outcome), decline_code=result.decline_code
            )
            return result
        messages = answer.get("messages")
        messages = messages if isinstance(messages, Mapping) else {}
        first = first_of(messages.get("message"))
        code = text_of(first.get("code"))
        text = scrub(text_of(first.get("text")), hidden)
        log.info("processor_api_error", processor=self.name, result_code=text_of(messages.get("resultCode")), code=code)
        if code in CREDENTIAL_ERRORS:
            raise ProcessorRejected(f"Authorize.Net refused the credentials: {code} {text}")
        if code in SERVER_ERRORS:
            raise ProcessorUnavailable(f"Authorize.Net failed: {code} {text}")
        if code == UNSUCCESSFUL:
            return ProcessorResult(Outcome.ERROR, decline_code="processing_error", message=text or None)
        if text_of(messages.get("resultCode")) == "Error":
            raise ProcessorRejected(f"Authorize.Net rejected the request: {code} {text}")
        raise ProcessorUnavailable("Authorize.Net answered without a transaction result")


# --- building requests --------------------------------------------------------


@functools.cache
def _system_trust_context() -> ssl_module.SSLContext:
    """Built once: loading the system trust store takes tens of milliseconds and blocks the event loop."""
    return ssl_module.create_default_context()


def _verifying_context(context: ssl_module.SSLContext | None) -> ssl_module.SSLContext:
    """An explicit context for every request, so a session built with ``ssl=False`` cannot turn verification off."""
    if context is None:
        context = _system_trust_context()
    if context.verify_mode != ssl_module.CERT_REQUIRED or not context.check_hostname:
        raise ValueError("the TLS context must verify certificates and host names")
    if context.minimum_version < ssl_module.TLSVersion.TLSv1_2:
        raise ValueError("the TLS context must require TLS 1.2 or later")
    return context


def _check_currency(currency: str) -> None:
    if currency.lower() != "usd":
        raise ProcessorRejected("the Authorize.Net adapter charges in usd only")


def _amount(amount: int) -> str:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError("the amount must be a positive integer number of cents")
    return format_amount(amount)


def _credit_card(card: CardDetails) -> dict[str, str]:
    credit_card = {
        "cardNumber": card.number.reveal(),
        "expirationDate": f"{card.exp_year:04d}-{card.exp_month:02d}",
    }
    if card.cvc is not None:
        credit_card["cardCode"] = card.cvc.reveal()
    return credit_card


def _bill_to(card: CardDetails) -> dict[str, str]:
    """``firstName``, ``lastName``, ``zip`` in schema order: the last word of the name is the last name."""
    bill_to: dict[str, str] = {}
    name = " ".join((card.name or "").split())
    if name:
        first, _, last = name.rpartition(" ")
        if first:
            bill_to["firstName"] = first[:_MAX_NAME]
        bill_to["lastName"] = last[:_MAX_NAME]
    postal_code = (card.postal_code or "").strip()
    if postal_code:
        bill_to["zip"] = postal_code[:_MAX_ZIP]
    return bill_to


# --- reading answers ------------------------------------------------------------


async def _read_limited(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > _MAX_ANSWER_BYTES:
            raise ProcessorUnavailable("Authorize.Net's answer is too large")
        chunks.append(chunk)
    return b"".join(chunks)
