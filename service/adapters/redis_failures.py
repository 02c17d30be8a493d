"""Why Redis could not take a command, in one sentence an operator can act on.

redis-py reports trouble as exception classes whose text has lost the
server's error code (an ``OOM`` reply becomes ``OutOfMemoryError("command not
allowed ...")``), and a Lua script that hits the same refusal reports it as a
generic ``ResponseError`` whose text carries the code.  ``unavailable_reason``
reads both forms and answers a reason for every refusal that means "the store
cannot take this now" (unreachable, out of memory, read-only replica, wrong
password, no master known to Sentinel, ...), or None for a programming error
that must surface as a bug.  The reasons name settings, never hosts or
values, because they reach /readyz and logs.
"""

from __future__ import annotations

import redis.exceptions as redis_exc

_READ_ONLY = (
    "the server is a read-only replica: point redis.url at the master, or use a redis+sentinel:// URL "
    "that follows failovers"
)

NOT_A_CLUSTER_URL = "the server is a Redis Cluster node: redis.url must be a redis+cluster:// URL naming its nodes"
REDIRECTED_TOO_OFTEN = (
    "the cluster redirected the command too many times in a row (a slot is moving); nothing was applied"
)
NOT_A_CLUSTER = "redis.url is a redis+cluster:// URL but the server is not in cluster mode: use redis://"

#: Error codes (the first word of the server's reply) that mean the store refuses for now.
_REFUSALS: dict[str, str] = {
    "OOM": "the server is out of memory (maxmemory reached, eviction policy noeviction) and refuses writes",
    "READONLY": _READ_ONLY,
    "MISCONF": "the server cannot persist to disk (MISCONF) and refuses writes",
    "NOREPLICAS": "the server has fewer good replicas than its min-replicas-to-write and refuses writes",
    "LOADING": "the server is loading its dataset",
    "MASTERDOWN": "the replica lost its master (MASTERDOWN)",
    "CLUSTERDOWN": "the cluster is down",
    "TRYAGAIN": "the cluster is moving a slot (TRYAGAIN)",
    "NOPERM": "the Redis user in redis.url lacks a permission the service needs (NOPERM)",
    "NOAUTH": "the server requires a password that redis.url does not give (NOAUTH)",
    "WRONGPASS": "the server refused the user name or password in redis.url (WRONGPASS)",
    "BUSY": "the server is busy running a script",
}


def _reply_code(exc: redis_exc.RedisError) -> str | None:
    """The server's error code, from the parsed status or from a script error's text."""
    status = getattr(exc, "status_code", None)
    if status in _REFUSALS:
        return str(status)
    text = str(exc)
    for code in _REFUSALS:
        if text.startswith(code) or f"-{code} " in text or f" {code} " in f" {text} ":
            return code
    return None


def applied_nothing(exc: BaseException) -> bool:
    """Whether ``exc`` is the server's refusal of the command (an error reply, or redis-py giving up after
    redirections), so that the command was certainly not applied; not so after a lost connection or a timeout."""
    return isinstance(exc, redis_exc.ResponseError | redis_exc.ClusterError | redis_exc.AuthenticationError)


def unavailable_reason(exc: BaseException) -> str | None:
    """A reason when ``exc`` means the store cannot take the command now; None for a bug."""
    from redis.asyncio.sentinel import MasterNotFoundError

    if isinstance(exc, MasterNotFoundError):
        return "no Sentinel in redis.url knows a master by the service name it gives (or none answers)"
    if isinstance(exc, redis_exc.AuthenticationError):
        return "the server refused the user name or password in redis.url"
    if isinstance(exc, redis_exc.OutOfMemoryError):
        return _REFUSALS["OOM"]
    if isinstance(exc, redis_exc.ReadOnlyError):
        return _READ_ONLY
    if isinstance(exc, redis_exc.BusyLoadingError):
        return _REFUSALS["LOADING"]
    if isinstance(exc, redis_exc.TimeoutError):
        return "the server did not answer within redis.socket_timeout"
    if isinstance(exc, redis_exc.ConnectionError):
        if "previous master is now a slave" in str(exc):
            return "the master was demoted during a failover; reconnecting to the new one"
        return "unreachable"
    if isinstance(exc, redis_exc.MovedError | redis_exc.AskError):
        # Only a client that is not cluster-aware ever sees these (the cluster client follows them).
        return NOT_A_CLUSTER_URL
    if isinstance(exc, redis_exc.ClusterError) and _reply_code(exc) is None:
        # redis-py's "TTL exhausted": every try was redirected (MOVED, ASK) or refused (TRYAGAIN), so
        # none applied the command. It happens while a slot moves; ClusterDownError carries its code.
        return REDIRECTED_TOO_OFTEN
    if isinstance(exc, redis_exc.RedisClusterException):
        if "Cluster mode is not enabled" in str(exc):
            return NOT_A_CLUSTER
        return f"the Redis Cluster in redis.url cannot be used: {str(exc).split(':')[0]}"
    if isinstance(exc, redis_exc.RedisError):
        code = _reply_code(exc)
        if code is not None:
            return _REFUSALS[code]
    return None
