"""The exception tree: every failure the service knows how to explain.

One place (``service.http.problems``) turns these into HTTP answers, so the
rest of the code raises what happened and never thinks about status codes::

    CardvaultError
    ├── ConfigError              bad settings: start-up stops with one line
    ├── KeyringError             master key missing or wrong, data key unusable
    │   └── DecryptionFailed     a ciphertext failed authentication
    ├── StoreUnavailable         Redis unreachable or refusing writes   -> 503
    │   └── StoreRefused         Redis answered "no": nothing was applied
    ├── OperatorError            a CLI request that cannot be done (unknown agency, slug taken)
    └── ApiError                 the client's request cannot be served   -> 4xx (5xx: an upstream failed)
        ├── MalformedRequest     not JSON, not an object                 -> 400
        ├── Unauthenticated      missing or unknown API key              -> 401
        ├── Forbidden            key may not do this / origin refused    -> 403
        ├── NotFound             no such object for this agency          -> 404
        ├── MethodNotAllowed                                             -> 405
        ├── Conflict                                                     -> 409
        ├── PayloadTooLarge                                              -> 413
        ├── UnsupportedMediaType                                         -> 415
        ├── ValidationFailed     well-formed but wrong fields            -> 422
        ├── TooManyRequests      a velocity limit refused it             -> 429 (Retry-After)
        ├── BadGateway           a forward destination failed us         -> 502
        └── GatewayTimeout       a forward destination did not answer    -> 504

Messages never contain a card number or CVC: callers describe the problem,
not the value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class CardvaultError(Exception):
    """Base of every error the service raises on purpose."""


class ConfigError(CardvaultError):
    """The configuration cannot be used; the message is one line naming the key."""


class KeyringError(CardvaultError):
    """Key material is missing, malformed, or cannot unwrap what is stored."""


class DecryptionFailed(KeyringError):
    """A ciphertext did not authenticate: tampered, moved, or its key was shredded."""


class OperatorError(CardvaultError):
    """An operator's command cannot be carried out; the message says why."""


class StoreUnavailable(CardvaultError):
    """Redis cannot be reached or refuses the write; the client may retry."""


class StoreRefused(StoreUnavailable):
    """Redis answered the command with a refusal (out of memory, read-only, a slot moving...): it was not applied.

    Unlike a lost connection or a timeout, after which the command may or may not have run, this
    is certain, so a step taken before it in the same request can be put back.
    """


@dataclass(frozen=True)
class FieldError:
    """One problem with one request field, by its dotted path."""

    field: str
    code: str
    message: str


class ApiError(CardvaultError):
    """A request the service understood well enough to refuse."""

    status = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        errors: Sequence[FieldError] = (),
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        if code is not None:
            self.code = code
        self.errors = tuple(errors)


class MalformedRequest(ApiError):
    status = 400
    code = "malformed_request"
    title = "The request is malformed"


class Unauthenticated(ApiError):
    status = 401
    code = "unauthenticated"
    title = "A valid API key is required"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"
    title = "This key may not do that"


class NotFound(ApiError):
    status = 404
    code = "not_found"
    title = "No such resource"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"
    title = "Method not allowed"


class Conflict(ApiError):
    status = 409
    code = "conflict"
    title = "Conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"
    title = "The request body is too large"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"
    title = "Send the request body as application/json"


class ValidationFailed(ApiError):
    status = 422
    code = "validation_failed"
    title = "The request has invalid fields"


class TooManyRequests(ApiError):
    """A velocity limit refused the request.  Deliberately the same answer whichever limit it was."""

    status = 429
    code = "rate_limited"
    title = "Too many requests"
    generic_detail = "Too many attempts in a short time. Wait a little, then try again."

    def __init__(self, *, retry_after: int) -> None:
        super().__init__(self.generic_detail)
        self.retry_after = retry_after


class BadGateway(ApiError):
    status = 502
    code = "bad_gateway"
    title = "The destination gave no usable answer"


class GatewayTimeout(ApiError):
    status = 504
    code = "gateway_timeout"
    title = "The destination did not answer in time"
