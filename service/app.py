"""create_app: the aiohttp application with its resources, middlewares and routes.

Redis is a ``cleanup_ctx`` resource.  If Redis is not reachable at start the
application still starts, answers /healthz, reports not-ready at /readyz and
503 elsewhere, and finishes its bootstrap in the background as soon as Redis
answers; it never needs a restart to recover.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web

from service.adapters.charges_store import ChargeStore
from service.adapters.checkout_store import CheckoutStore
from service.adapters.idempotency_store import IdempotencyStore
from service.adapters.keyring import Keyring, MasterKeys
from service.adapters.processors.registry import ProcessorRegistry
from service.adapters.redis_client import make_client
from service.adapters.store import VaultStore
from service.adapters.velocity_store import VelocityStore
from service.agencies import AgencyService
from service.charges import ChargeService
from service.checkout import CheckoutService
from service.clock import Clock, system_clock
from service.errors import CardvaultError, StoreUnavailable
from service.http import connection_limits, metrics_middleware, middlewares, parser_errors
from service.http.proxy import TrustedProxies
from service.http.routes import add_routes
from service.http.state import SERVICES, Services
from service.preflight import Findings, check_redis
from service.settings import Settings
from service.staff_context import build_staff_context
from service.vault import Vault
from service.velocity import Velocity

log = structlog.get_logger("cardvault.app")
BOOTSTRAP_RETRY_SECONDS = 1.0


async def bootstrap(svc: Services, store: VaultStore) -> None:
    """Check the server's persistence and replication, then load the pepper (creating it on a fresh Redis)."""
    findings = Findings()
    await check_redis(svc.settings, store.redis, findings)
    for warning in findings.warnings:
        log.warning("startup check", problem=warning)
    findings.raise_if_fatal()
    svc.keyring.load_pepper(await store.system_pepper(svc.keyring.new_wrapped_pepper()))
    svc.store = store
    svc.agencies = AgencyService(store, svc.keyring, svc.clock, cache_seconds=svc.settings.auth.cache_seconds)
    svc.velocity = Velocity(VelocityStore(store.redis), svc.settings.velocity, svc.clock, svc.keyring)
    svc.vault = Vault(store, svc.settings.tokens, svc.clock, svc.velocity)
    svc.idempotency = IdempotencyStore(store.redis)
    assert svc.processors is not None  # processors_context runs first
    svc.charges = ChargeService(ChargeStore(store.redis), svc.processors, svc.clock, svc.velocity)
    svc.staff = build_staff_context(store.redis, svc.settings.staff, svc.clock, svc.agencies, svc.vault, svc.charges)
    svc.auditor = svc.staff.auditor
    svc.velocity.auditor = svc.auditor  # velocity trips go to the same audit trail
    svc.checkout = CheckoutService(
        CheckoutStore(store.redis), svc.charges, svc.clock, svc.settings.checkout.session_ttl_seconds
    )
    log.info("vault ready")


async def _bootstrap_until_done(svc: Services, store: VaultStore) -> None:
    """Retry while Redis is away; a refusal found once it answers (wrong master key, a Redis that could
    lose writes in production) is fatal: recorded for /readyz and ``serve``'s exit status, and the
    process is asked to stop, exactly as if it had been found at start."""
    while True:
        try:
            await bootstrap(svc, store)
            return
        except StoreUnavailable as exc:
            log.warning("waiting for redis", reason=str(exc))
            svc.redis_problem = str(exc)
            await asyncio.sleep(BOOTSTRAP_RETRY_SECONDS)
        except CardvaultError as exc:
            log.critical("cannot serve", problem=str(exc))
            svc.fatal = str(exc)
            signal.raise_signal(signal.SIGTERM)
            return


def outbound_tls(ca_file: Path | None) -> ssl.SSLContext:
    """Verify processors' certificates against the system's CAs, plus ``ca_file`` when given."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


async def processors_context(app: web.Application) -> AsyncIterator[None]:
    """One HTTP client session for every processor call, closed at shutdown."""
    svc = app[SERVICES]
    settings = svc.settings.processors
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100, ssl=outbound_tls(settings.ca_file)),
        auto_decompress=True,
    ) as session:
        svc.processors = ProcessorRegistry(settings, session, outbound_tls(settings.ca_file), svc.clock)
        yield


def redis_context(redis_url: str) -> Callable[[web.Application], AsyncIterator[None]]:
    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        svc = app[SERVICES]
        client = make_client(redis_url, svc.settings.redis)
        store = VaultStore(client)
        retry: asyncio.Task[None] | None = None
        try:
            await bootstrap(svc, store)
        except StoreUnavailable as exc:
            log.warning("redis unavailable at start; will keep trying", reason=str(exc))
            svc.redis_problem = str(exc)
            retry = asyncio.create_task(_bootstrap_until_done(svc, store))
        yield
        if retry is not None:
            retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retry
        await client.aclose()

    return redis_ctx


def create_app(
    settings: Settings,
    master_keys: MasterKeys,
    *,
    redis_url: str,
    clock: Clock = system_clock,
    tls: bool = True,
) -> web.Application:
    parser_errors.install()
    connection_limits.install()
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        handler_args=connection_limits.handler_args(settings.server),
        middlewares=[
            metrics_middleware.metrics,  # outermost: it sees the status the client gets
            middlewares.request_id,
            middlewares.security_headers,
            middlewares.errors,
            TrustedProxies(settings.proxy).middleware,  # all after it see the client's address and scheme
        ],
    )
    app[SERVICES] = Services(settings=settings, clock=clock, keyring=Keyring(master_keys), tls=tls)
    app.on_response_prepare.append(middlewares.security_headers_on_prepare)
    app.cleanup_ctx.append(processors_context)
    app.cleanup_ctx.append(redis_context(redis_url))
    add_routes(app)
    return app
