"""What every Redis adapter shares: key names, the error mapping, small helpers.

Key names live here so the layout is written down once (see ``store`` for the
whole map); ``redis_errors`` is the one translation of Redis trouble into
StoreUnavailable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis.exceptions as redis_exc

from service.adapters.redis_failures import unavailable_reason
from service.errors import StoreUnavailable

SYSTEM_KEY = "cv:system"
AGENCIES_KEY = "cv:agencies"


def agency_key(agency_id: str) -> str:
    return f"cv:{{{agency_id}}}:agency"


def token_key(agency_id: str, token_id: str) -> str:
    return f"cv:{{{agency_id}}}:tok:{token_id}"


def cvc_key(agency_id: str, token_id: str) -> str:
    return f"cv:{{{agency_id}}}:cvc:{token_id}"


def fingerprint_key(agency_id: str, fingerprint: str) -> str:
    return f"cv:{{{agency_id}}}:fp:{fingerprint}"


def api_key_key(key_hash: str) -> str:
    return f"cv:apikey:{key_hash}"


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """Turn Redis trouble into StoreUnavailable (with the reason, see redis_failures); let programming errors
    through."""
    try:
        yield
    except redis_exc.RedisError as exc:
        reason = unavailable_reason(exc)
        if reason is None:
            raise
        raise StoreUnavailable(f"Redis: {reason}") from None


def text_of(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
