"""Timing every Redis round trip of a redis.asyncio client, for the metrics.

Every Redis call of the service goes through the client's ``execute_command``
(commands, and Lua scripts, which redis-py sends as EVALSHA) or a pipeline's
``execute``, so timing those two measures every round trip, including the
wait for a pooled connection, which is what a request actually experiences.
It adds two clock reads and one histogram observation per round trip and
nothing to the wire.

The timing wraps the client *instance* rather than subclassing it, so it
composes with whatever client class ``make_client`` builds (the durability
layer has its own subclass with its own pipeline class) without a class for
each combination.  redis-py 8's observability hooks would need OpenTelemetry
and leave out the pool wait.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as redis
from prometheus_client import Histogram

from service.metrics import REDIS_SECONDS, child

R = TypeVar("R", bound=redis.Redis)


def _timer(command: object) -> Histogram:
    return child(REDIS_SECONDS, command.upper() if isinstance(command, str) else "OTHER")


def _timed_pipeline_execute(pipe: Any) -> Callable[..., Awaitable[Any]]:
    """The pipeline's ``execute``, timed.  It becomes an attribute of ``pipe`` itself, so it must not hold
    ``pipe`` strongly: a closure over ``pipe`` (or its bound ``execute``) made every pipeline a reference
    cycle, garbage only the cyclic collector could free (thousands waiting at a time under load, and
    longer collections); it reaches ``pipe`` through a weak reference and calls its class's method."""
    execute: Callable[..., Awaitable[Any]] = type(pipe).execute
    pipe_ref = weakref.ref(pipe)

    async def timed_execute(raise_on_error: bool = True) -> Any:
        pipe = pipe_ref()
        assert pipe is not None  # whoever calls pipe.execute holds pipe
        started = time.perf_counter()
        try:
            return await execute(pipe, raise_on_error)
        finally:
            # a cluster pipeline has neither attribute (and no transaction across nodes)
            transaction = getattr(pipe, "is_transaction", False) or getattr(pipe, "explicit_transaction", False)
            kind = "MULTI" if transaction else "PIPELINE"
            _timer(kind).observe(time.perf_counter() - started)

    return timed_execute


def time_round_trips(client: R) -> R:
    """Make ``client`` record each command's and each pipeline's round trip in REDIS_SECONDS."""
    execute_command: Callable[..., Awaitable[Any]] = client.execute_command
    make_pipeline: Callable[..., Any] = client.pipeline

    async def timed_execute_command(*args: Any, **options: Any) -> Any:
        started = time.perf_counter()
        try:
            return await execute_command(*args, **options)
        finally:
            _timer(args[0] if args else None).observe(time.perf_counter() - started)

    def timed_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)  # each client's own defaults (a cluster's is no transaction)
        setattr(pipe, "execute", _timed_pipeline_execute(pipe))  # noqa: B010 - instance attribute on purpose
        return pipe

    setattr(client, "execute_command", timed_execute_command)  # noqa: B010
    setattr(client, "pipeline", timed_pipeline)  # noqa: B010
    return client
