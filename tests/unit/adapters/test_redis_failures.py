"""How redis-py's exceptions are read: a reason for the operator, and whether the command was certainly not applied.

The exceptions are redis-py's own classes, built as its parser builds them from an error reply (the
code cut from the text into ``status_code``) and as its cluster client raises "TTL exhausted";
the suite's fault tests (tests/faults) provoke the same ones from real servers.
"""

from __future__ import annotations

import pytest
import redis.exceptions as redis_exc

from service.adapters.redis_base import redis_errors
from service.adapters.redis_failures import REDIRECTED_TOO_OFTEN, applied_nothing, unavailable_reason
from service.errors import StoreRefused, StoreUnavailable

REFUSALS = {
    "cluster client gave up after redirections": redis_exc.ClusterError("TTL exhausted."),
    "slot moving": redis_exc.TryAgainError("Multiple keys request during rehashing of slot", status_code="TRYAGAIN"),
    "out of memory": redis_exc.OutOfMemoryError(
        "command not allowed when used memory > 'maxmemory'.", status_code="OOM"
    ),
    "read-only replica": redis_exc.ReadOnlyError(
        "You can't write against a read only replica.", status_code="READONLY"
    ),
    "cluster down": redis_exc.ClusterDownError("The cluster is down", status_code="CLUSTERDOWN"),
    "script refused": redis_exc.ResponseError("NOREPLICAS Not enough good replicas to write. script: abc"),
    "wrong password": redis_exc.AuthenticationError("invalid username-password pair"),
}

UNCERTAIN = {
    "connection lost": redis_exc.ConnectionError("Connection closed by server."),
    "no answer in time": redis_exc.TimeoutError("Timeout reading from socket"),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_a_refusal_is_a_reason_and_certainly_not_applied(name: str) -> None:
    exc = REFUSALS[name]
    assert unavailable_reason(exc)
    assert applied_nothing(exc)
    with pytest.raises(StoreRefused, match=r"^Redis: "), redis_errors():
        raise exc


@pytest.mark.parametrize("name", list(UNCERTAIN))
def test_a_lost_or_late_answer_is_unavailable_but_may_have_been_applied(name: str) -> None:
    exc = UNCERTAIN[name]
    assert unavailable_reason(exc)
    assert not applied_nothing(exc)
    with pytest.raises(StoreUnavailable) as raised, redis_errors():
        raise exc
    assert not isinstance(raised.value, StoreRefused)


def test_redirections_until_redis_py_gives_up_say_a_slot_is_moving() -> None:
    assert unavailable_reason(redis_exc.ClusterError("TTL exhausted.")) == REDIRECTED_TOO_OFTEN
    down = redis_exc.ClusterDownError("The cluster is down", status_code="CLUSTERDOWN")
    assert unavailable_reason(down) == "the cluster is down"


def test_a_script_bug_is_no_refusal_and_goes_through() -> None:
    bug = redis_exc.ResponseError("ERR user_script:3: attempt to compare nil with number script: abc")
    assert unavailable_reason(bug) is None
    with pytest.raises(redis_exc.ResponseError), redis_errors():
        raise bug
