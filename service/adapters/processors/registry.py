"""Which processor serves an agency, built from its settings, behind timeout and circuit breaker.

Every call goes through :class:`GuardedProcessor`: the circuit breaker first,
then the adapter under an overall timeout (a backstop even for adapters with
their own), so a processor that hangs becomes ProcessorTimeout after
``processors.timeout_seconds`` and one that keeps failing is paused.
Breakers are per processor account (name, endpoint, login), shared by every
agency that uses the same account in this process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp

from service.adapters.keyring import AgencyKeys
from service.adapters.processors.authorize_net import AuthorizeNetProcessor
from service.adapters.processors.base import (
    AuthorizationRequest,
    Processor,
    ProcessorError,
    ProcessorResult,
    ProcessorTimeout,
    ProcessorUnavailable,
)
from service.adapters.processors.breaker import CircuitBreaker
from service.adapters.processors.sandbox import SandboxProcessor
from service.clock import Clock, system_clock
from service.domain.processing import AUTHORIZE_NET_SANDBOX, ProcessorConfig, ProcessorName
from service.metrics import record_processor_call
from service.settings import ProcessorSettings

T = TypeVar("T")
ADAPTER_CACHE_LIMIT = 1000


class GuardedProcessor:
    """A processor with the breaker and the overall timeout around every call."""

    def __init__(self, inner: Processor, breaker: CircuitBreaker, timeout: float) -> None:
        self.inner = inner
        self.name = inner.name
        self.breaker = breaker
        self.timeout = timeout

    def admit(self) -> None:
        """Claim a call now (CircuitOpen if paused), before anything irreversible such as taking a CVC."""
        self.breaker.before_call()

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]], *, admitted: bool = False) -> T:
        if not admitted:
            self.breaker.before_call()
        started, outcome = time.perf_counter(), "error"
        try:
            async with asyncio.timeout(self.timeout):
                result = await call()
            outcome = str(result.outcome) if isinstance(result, ProcessorResult) else "answered"
        except TimeoutError:
            outcome = ProcessorTimeout.code
            self.breaker.record_failure()
            raise ProcessorTimeout(f"{self.name} did not answer within {self.timeout:g} s") from None
        except (ProcessorTimeout, ProcessorUnavailable) as exc:
            outcome = exc.code
            self.breaker.record_failure()
            raise
        except ProcessorError as exc:
            outcome = exc.code
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            record_processor_call(self.name, operation, outcome, time.perf_counter() - started)
        self.breaker.record_success()
        return result

    async def authorize(self, request: AuthorizationRequest, *, admitted: bool = False) -> ProcessorResult:
        return await self._call("authorize", lambda: self.inner.authorize(request), admitted=admitted)

    async def capture(self, transaction_id: str, amount: int, currency: str) -> ProcessorResult:
        return await self._call("capture", lambda: self.inner.capture(transaction_id, amount, currency))

    async def void(self, transaction_id: str) -> ProcessorResult:
        return await self._call("void", lambda: self.inner.void(transaction_id))

    async def refund(
        self, transaction_id: str, amount: int, currency: str, card_last4: str, *, admitted: bool = False
    ) -> ProcessorResult:
        return await self._call(
            "refund", lambda: self.inner.refund(transaction_id, amount, currency, card_last4), admitted=admitted
        )


class ProcessorRegistry:
    def __init__(
        self,
        settings: ProcessorSettings,
        session: aiohttp.ClientSession,
        ssl_context: ssl.SSLContext | None,
        clock: Clock = system_clock,
    ):
        self.settings = settings
        self.session = session
        self.ssl_context = ssl_context
        self.sandbox = SandboxProcessor(
            slow_seconds=settings.sandbox_slow_seconds,
            settlement_cutoff=dt.time.fromisoformat(settings.sandbox_settlement_cutoff),
            clock=clock,
        )
        self._breakers: dict[tuple[str, str, str], CircuitBreaker] = {}
        # Adapters by (agency, sealed configuration): opening the credentials and building the adapter
        # once per configuration, not on every charge. A changed configuration has new sealed bytes.
        self._adapters: dict[tuple[str, bytes], Processor] = {}

    def breaker(self, config: ProcessorConfig) -> CircuitBreaker:
        account = (str(config.name), config.endpoint or "", config.login_id or "")
        breaker = self._breakers.get(account)
        if breaker is None:
            breaker = self._breakers[account] = CircuitBreaker(
                threshold=self.settings.breaker_failures, reset_seconds=self.settings.breaker_reset_seconds
            )
        return breaker

    def for_agency(self, config: ProcessorConfig, keys: AgencyKeys) -> GuardedProcessor:
        inner: Processor
        if config.name is ProcessorName.SANDBOX:
            inner = self.sandbox
        else:
            if config.sealed_credentials is None or config.login_id is None:
                raise ProcessorUnavailable("authorize_net is configured without credentials")
            cache_key = (keys.agency_id, config.to_json().encode())
            cached = self._adapters.get(cache_key)
            if cached is None:
                transaction_key = keys.open_secret("processor-credentials", config.sealed_credentials).decode()
                cached = AuthorizeNetProcessor(
                    login_id=config.login_id,
                    transaction_key=transaction_key,
                    endpoint=config.endpoint or AUTHORIZE_NET_SANDBOX,
                    session=self.session,
                    timeout=self.settings.timeout_seconds,
                    ssl=self.ssl_context,
                )
                if len(self._adapters) >= ADAPTER_CACHE_LIMIT:
                    self._adapters.clear()
                self._adapters[cache_key] = cached
            inner = cached
        return GuardedProcessor(inner, self.breaker(config), self.settings.timeout_seconds)
