"""Typed application state: what handlers may reach, under one AppKey."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from service.adapters.idempotency_store import IdempotencyStore
from service.adapters.keyring import Keyring
from service.adapters.processors.registry import ProcessorRegistry
from service.adapters.store import VaultStore
from service.agencies import AgencyService
from service.audit import Auditor
from service.charges import ChargeService
from service.checkout import CheckoutService
from service.clock import Clock
from service.settings import Settings
from service.staff_context import StaffContext
from service.vault import Vault
from service.velocity import Velocity


@dataclass
class Services:
    """Everything a request handler needs, built once per application."""

    settings: Settings
    clock: Clock
    keyring: Keyring
    store: VaultStore | None = None
    agencies: AgencyService | None = None
    vault: Vault | None = None
    processors: ProcessorRegistry | None = None
    charges: ChargeService | None = None
    checkout: CheckoutService | None = None
    idempotency: IdempotencyStore | None = None
    staff: StaffContext | None = None
    velocity: Velocity | None = None  # card-testing defence: limits, decline ratios, trip counts
    auditor: Auditor | None = None  # the one audit trail every surface (API, staff, CLI) records to
    tls: bool = True
    fatal: str | None = None  # a refusal found after start (see app._bootstrap_until_done)
    redis_problem: str | None = None  # why the last bootstrap could not reach or use Redis (for /readyz)

    @property
    def ready(self) -> bool:
        return self.store is not None and self.keyring.ready


SERVICES = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
