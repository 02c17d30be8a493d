"""What every Redis adapter shares: key names, the error mapping, small helpers.

Key names live here so the layout is written down once (see ``store`` for the
whole map); ``redis_errors`` is the one translation of Redis trouble into
StoreUnavailable.

The layout is made for Redis Cluster, and the same on every topology.  A key's
``{...}`` part (its hash tag) picks its slot, and every multi-key script or
transaction stays within one tag:

- ``{cv}``: the control plane read on every request (agencies, their index,
  API-key entries); small, and one slot so a key lookup stays one round trip;
- ``{<agency>}``: an agency's own control records (staff, sessions, velocity,
  key-rotation state), so agencies spread over the cluster;
- ``{<agency>.<shard>}``: the agency's data (tokens, CVCs, fingerprint sets,
  charges, idempotency records, checkout sessions, order indexes), spread over
  ``SHARDS`` tags so one large agency is not pinned to one master.  A card's
  tokens all live in the shard of its fingerprint (a token id is drawn until it
  falls there: ``id_in_shard``), and a charge in its token's shard, so
  deduplication and a charge start stay single atomic scripts.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, cast

import redis.asyncio as redis
import redis.exceptions as redis_exc
from redis.asyncio.cluster import RedisCluster

from service.adapters.redis_failures import applied_nothing, unavailable_reason
from service.errors import StoreRefused, StoreUnavailable

SYSTEM_KEY = "cv:system"
AGENCIES_KEY = "cv:{cv}:agencies"
#: Data tags per agency: 16 spreads an agency over up to 16 slots (masters), and keeps a per-agency
#: scan (key rotation, shredding) to 16 match patterns.
SHARDS = 16
#: Draws before ``id_in_shard`` gives up (each hits with probability 1/SHARDS: 1 in 10^28 to fail).
_MAX_DRAWS = 1000


def shard_of(identifier: str) -> int:
    """The data shard an id (token, charge, session, idempotency key hash, order reference) lives in."""
    return zlib.crc32(identifier.encode()) % SHARDS


def id_in_shard(shard: int, draw: Callable[[], str]) -> str:
    """A fresh id from ``draw`` that lives in ``shard`` (about SHARDS draws on average)."""
    for _ in range(_MAX_DRAWS):
        candidate = draw()
        if shard_of(candidate) == shard:
            return candidate
    raise RuntimeError(f"no id in shard {shard} after {_MAX_DRAWS} draws")


def data_tag(agency_id: str, shard: int) -> str:
    """The hash tag (with its braces) of one of an agency's data shards."""
    return f"{{{agency_id}.{shard:x}}}"


def data_prefix(agency_id: str, shard: int) -> str:
    return f"cv:{data_tag(agency_id, shard)}:"


def agency_key(agency_id: str) -> str:
    return f"cv:{{cv}}:agency:{agency_id}"


def agency_control_pattern(agency_id: str) -> str:
    """SCAN pattern of the agency's control records (not its data: see ``agency_data_patterns``)."""
    return f"cv:{{{agency_id}}}:*"


def agency_data_pattern(agency_id: str) -> str:
    """SCAN pattern of every data key of the agency (one hex digit of shard: SHARDS is 16)."""
    return f"cv:{{{agency_id}.?}}:*"


def token_key(agency_id: str, token_id: str) -> str:
    return f"{data_prefix(agency_id, shard_of(token_id))}tok:{token_id}"


def cvc_key(agency_id: str, token_id: str) -> str:
    return f"{data_prefix(agency_id, shard_of(token_id))}cvc:{token_id}"


def card_shard(fingerprint: str) -> int:
    """The shard every token of a card lives in, with the card's fingerprint index: its first hex digit.

    (A fingerprint is a keyed hash, so its digits are uniform; the first one
    also nests the index buckets, ``fp[:3]``, inside the shards.)
    """
    return int(fingerprint[0], 16) % SHARDS


def fingerprint_key(agency_id: str, fingerprint: str) -> str:
    """The fingerprint index bucket of a card: one sorted set per 3-hex-digit prefix in the card's shard.

    A key per card cost more than the token itself (about 260 bytes); in buckets
    of a few dozen members Redis keeps each as a compact listpack (about 70
    bytes a token).  Members are ``<fingerprint without its bucket prefix>:<token
    id>`` (``fingerprint_member``), found by a lexical range on that part.
    """
    return f"{data_prefix(agency_id, card_shard(fingerprint))}fpi:{fingerprint[:3]}"


def fingerprint_in_bucket(fingerprint: str) -> str:
    """The part of a fingerprint its index bucket does not already say (the bucket is its first three digits)."""
    return fingerprint[3:]


def fingerprint_member(fingerprint: str, token_id: str) -> str:
    return f"{fingerprint_in_bucket(fingerprint)}:{token_id}"


def api_key_key(key_hash: str) -> str:
    return f"cv:{{cv}}:apikey:{key_hash}"


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """Turn Redis trouble into StoreUnavailable (with the reason, see redis_failures), StoreRefused when the
    server's answer says the command was not applied; let programming errors through."""
    try:
        yield
    except (redis_exc.RedisError, redis_exc.RedisClusterException) as exc:  # the latter is no RedisError
        reason = unavailable_reason(exc)
        if reason is None:
            raise
        raise (StoreRefused if applied_nothing(exc) else StoreUnavailable)(f"Redis: {reason}") from None


def text_of(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


async def get_many(client: redis.Redis, keys: Sequence[bytes | str]) -> list[bytes | None]:
    """GET of many keys: one MGET on one server; on a cluster, one MGET per slot, sent to the masters together."""
    if not keys:
        return []
    if is_cluster(client):
        return cast(list[bytes | None], await cast(Any, client).mget_nonatomic(list(keys)))
    return cast(list[bytes | None], await client.mget(list(keys)))


async def scan_batches(
    client: redis.Redis, pattern: str, position: str = "", count: int = 500
) -> AsyncIterator[tuple[str, list[bytes]]]:
    """SCAN ``pattern`` over every master, in batches: (position to resume after this batch, its keys).

    The position is ``"<master>:<cursor>"`` (masters in address order; one
    server is master 0); "" starts over and is what the last batch carries.  A
    position saved before the cluster's masters changed restarts that master's
    scan, which only repeats keys (callers are idempotent).
    """
    nodes: list[Any] = sorted(cast(Any, client).get_primaries(), key=lambda n: n.name) if is_cluster(client) else [None]
    first, _, cursor_text = position.partition(":")
    start = int(first) if first.isdigit() and int(first) < len(nodes) else 0
    cursor = int(cursor_text) if cursor_text.isdigit() and start == int(first or 0) else 0
    for index in range(start, len(nodes)):
        node = nodes[index]
        while True:
            if node is None:
                cursor, keys = await client.scan(cursor=cursor, match=pattern, count=count)
            else:
                cursors, keys = await cast(Any, client).scan(
                    cursor=cursor, match=pattern, count=count, target_nodes=node
                )
                cursor = int(cursors[node.name])
            if cursor != 0:
                yield f"{index}:{cursor}", cast(list[bytes], keys)
                continue
            last = index == len(nodes) - 1
            yield ("" if last else f"{index + 1}:0"), cast(list[bytes], keys)
            break
