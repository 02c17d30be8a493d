"""Reading Authorize.Net's answers: the reason-code tables and the mapping to our results.

Kept apart from the adapter so the tables the README repeats are in one small
place.  Everything here is pure: bytes in, ProcessorResult (or a
ProcessorError) out, with processor texts scrubbed of anything we sent in
secret and of card numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

from service.adapters.processors.base import Outcome, ProcessorResult, ProcessorUnavailable
from service.domain.redaction import redact_card_numbers

DECLINE_CODES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "2": "generic_decline",
        "3": "generic_decline",  # referral: call the issuer
        "4": "lost_card",  # "pick up card": lost or stolen, Authorize.Net does not say which
        "6": "incorrect_number",
        "37": "incorrect_number",
        "315": "incorrect_number",
        "8": "expired_card",
        "317": "expired_card",
        "11": "duplicate_transaction",
        "318": "duplicate_transaction",
        "17": "card_not_supported",
        "28": "card_not_supported",
        "27": "incorrect_zip",  # AVS mismatch; we send only the postal code
        "127": "incorrect_zip",
        "44": "incorrect_cvc",
        "45": "incorrect_cvc",  # AVS and card code mismatch
        "65": "incorrect_cvc",
        "145": "incorrect_cvc",
        "165": "incorrect_cvc",
    }
)
#: cvvResultCode -> our cvc_check; any other letter is "unavailable".
CVC_CHECKS: Final[Mapping[str, str]] = MappingProxyType(
    {"M": "pass", "N": "fail", "P": "unchecked", "S": "unchecked", "U": "unavailable"}
)
CREDENTIAL_ERRORS: Final = frozenset({"E00005", "E00006", "E00007", "E00008", "E00010", "E00011"})
SERVER_ERRORS: Final = frozenset({"E00001"})
UNSUCCESSFUL: Final = "E00027"  # "The transaction was unsuccessful." without a transaction result

_MAX_MESSAGE: Final = 300
_REDACTED: Final = "[REDACTED]"


def parse_answer(raw: bytes) -> Mapping[str, Any]:
    """JSON after the byte order mark Authorize.Net puts in front of it."""
    try:
        answer = json.loads(raw.decode("utf-8-sig"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError; the latter holds the text, so drop the chain
        raise ProcessorUnavailable("Authorize.Net's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ProcessorUnavailable("Authorize.Net's answer is not a JSON object")
    return answer


def transaction_result(transaction: Mapping[str, Any], hidden: Sequence[str], cvc_sent: bool | None) -> ProcessorResult:
    response_code = text_of(transaction.get("responseCode"))
    if response_code in {"1", "4"}:
        first = first_of(transaction.get("messages"))
        reason, text = text_of(first.get("code")), text_of(first.get("description"))
    else:
        first = first_of(transaction.get("errors"))
        reason, text = text_of(first.get("errorCode")), text_of(first.get("errorText"))
    transaction_id = text_of(transaction.get("transId"))
    auth_code = text_of(transaction.get("authCode"))
    decline_code = None
    if response_code == "1":
        outcome = Outcome.APPROVED
    elif response_code == "4":
        outcome = Outcome.HELD
    elif reason in DECLINE_CODES or response_code == "2":
        outcome, decline_code, auth_code = Outcome.DECLINED, DECLINE_CODES.get(reason, "generic_decline"), ""
    else:
        outcome, decline_code, auth_code = Outcome.ERROR, "processing_error", ""
    return ProcessorResult(
        outcome,
        transaction_id=transaction_id if transaction_id.strip("0") else None,
        auth_code=auth_code if auth_code.strip("0") else None,
        avs_result=text_of(transaction.get("avsResultCode")) or None,
        cvc_check=_cvc_check(text_of(transaction.get("cvvResultCode")), cvc_sent),
        decline_code=decline_code,
        message=scrub(text, hidden) or None,
    )


def _cvc_check(code: str, cvc_sent: bool | None) -> str | None:
    if cvc_sent is None:  # captures, voids and refunds check no CVC
        return None
    if not code:
        return "unavailable" if cvc_sent else "unchecked"
    return CVC_CHECKS.get(code, "unavailable")


def first_of(items: object) -> Mapping[str, Any]:
    if isinstance(items, list) and items and isinstance(items[0], Mapping):
        return items[0]
    return {}


def text_of(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""


def scrub(text: str, hidden: Sequence[str]) -> str:
    """A processor text safe to pass on: no value we sent in secret, no card number, bounded length."""
    for secret in hidden:
        if secret:
            text = text.replace(secret, _REDACTED)
    return redact_card_numbers(text)[:_MAX_MESSAGE]
