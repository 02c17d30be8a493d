"""Prometheus metrics: what the vault counts and times, in aggregate only.

Every metric the service exports is defined here, once, with the only label
names it may carry, so what could ever reach a scrape is reviewable in one
screen.  Label values come from small fixed sets chosen by our own code (a
route's pattern such as ``/v1/tokens/{token_id}``, a status code, a processor
kind, a decline code from the processors' fixed tables, a Redis command
name): never a path as sent, a token or charge id, a card number, a key, an
agency, an IP address or anything a client typed.  The agency is deliberately
not a label: it is not personal data, but it identifies a tenant, and
per-agency volumes belong to the audit trail, not to a monitoring system
that many people can read.

Under ``cardvault serve --workers N`` each worker runs with
``PROMETHEUS_MULTIPROC_DIR`` set by the supervisor, so these same objects
write to per-process files that the supervisor's listener adds up
(``service.http.metrics_listener``); in a single process they live in memory.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from prometheus_client import Counter, Gauge, Histogram

M = TypeVar("M", Counter, Histogram)

#: Request latency: from the fast paths (a token lookup, a few ms) to a processor call at its timeout.
REQUEST_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: One Redis command or pipeline: a fraction of a millisecond on a local Redis; fsync puts it near 1 ms.
REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0)
#: A processor call: the sandbox answers in microseconds, a gateway in tens of ms, a timeout at 25 s.
PROCESSOR_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0)

#: Its ``_count`` series is the request count by route, method and status (no separate counter:
#: every observation costs a lock, and a file write under --workers, on the hot path).
HTTP_REQUEST_SECONDS = Histogram(
    "cardvault_http_request_duration_seconds",
    "Time from routing a request to its response, by route pattern, method and status.",
    ["route", "method", "status"],
    buckets=REQUEST_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "cardvault_http_requests_in_flight",
    "Requests being handled now (summed over live workers).",
    multiprocess_mode="livesum",
)
TOKENS_CREATED = Counter(
    "cardvault_tokens_created",
    "Tokens created (not counting deduplicated answers that returned an existing token), by format.",
    ["format"],
)
CHARGES = Counter(
    "cardvault_charges",
    "Charges that reached the processor, by processor kind and resulting status.",
    ["processor", "status"],
)
DECLINES = Counter(
    "cardvault_charge_declines",
    "Declined authorizations, by processor kind and decline code.",
    ["processor", "decline_code"],
)
RATE_LIMIT_TRIPS = Counter(
    "cardvault_rate_limit_trips",
    "Requests refused by a rate or velocity limit, by kind of limit.",
    ["kind"],
)
REDIS_SECONDS = Histogram(
    "cardvault_redis_command_duration_seconds",
    "Round trip of one Redis command, script or pipeline as the service sees it (pool wait included).",
    ["command"],
    buckets=REDIS_BUCKETS,
)
PROCESSOR_SECONDS = Histogram(
    "cardvault_processor_call_duration_seconds",
    "One call to a payment processor, by processor kind, operation and outcome.",
    ["processor", "operation", "outcome"],
    buckets=PROCESSOR_BUCKETS,
)

#: HTTP methods that get their own label value; any other method sent to us is "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


_children: dict[tuple[object, ...], Any] = {}


def child(metric: M, *labels: str) -> M:
    """``metric.labels(*labels)``, cached: ``labels()`` takes a lock and builds tuples on every call.

    The cache stays small because every label value comes from a fixed set (see the module doc).
    """
    key = (metric, *labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return cast(M, found)


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


def record_token_created(token_format: str) -> None:
    child(TOKENS_CREATED, token_format).inc()


def record_charge(processor: str, status: str, decline_code: str | None) -> None:
    """A charge's processor call has ended with ``status``; a decline also counts its code."""
    child(CHARGES, processor, status).inc()
    if status == "declined":
        child(DECLINES, processor, decline_code or "generic_decline").inc()


def record_rate_limit_trip(kind: str) -> None:
    """A rate or velocity limit refused a request; ``kind`` names the limit, never who hit it."""
    child(RATE_LIMIT_TRIPS, kind).inc()


def record_processor_call(processor: str, operation: str, outcome: str, seconds: float) -> None:
    child(PROCESSOR_SECONDS, processor, operation, outcome).observe(seconds)
