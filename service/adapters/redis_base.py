"""What every Redis adapter shares: key names, the error mapping, small helpers.

Key names live here so the layout is written down once (see ``store`` for the
whole map); ``redis_errors`` is the one translation of Redis trouble into
StoreUnavailable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis.exceptions as redis_exc

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


_UNAVAILABLE_REPLIES = (
    "OOM",
    "READONLY",
    "MISCONF",
    "NOREPLICAS",
    "LOADING",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "TRYAGAIN",
)


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """Turn Redis trouble into StoreUnavailable; let programming errors through."""
    try:
        yield
    except (redis_exc.ConnectionError, redis_exc.TimeoutError) as exc:
        raise StoreUnavailable(f"Redis unreachable: {type(exc).__name__}") from None
    except redis_exc.ResponseError as exc:
        reply = str(exc)
        if reply.startswith(_UNAVAILABLE_REPLIES) or "NOPERM" in reply or "NOAUTH" in reply:
            raise StoreUnavailable(f"Redis refused: {reply.split(' ', 1)[0]}") from None
        raise


def text_of(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
