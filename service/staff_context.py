"""Everything the staff pages use, built once the store is up (see ``app.bootstrap``)."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as redis

from service.adapters.audit_log import AuditLog
from service.adapters.staff_forms import FormNonces
from service.adapters.staff_orders_store import StaffOrderStore
from service.adapters.staff_sessions import StaffSessionStore
from service.adapters.staff_store import StaffStore
from service.agencies import AgencyService
from service.audit import Auditor
from service.charges import ChargeService
from service.clock import Clock
from service.settings import StaffSettings
from service.staff import StaffService
from service.staff_orders import StaffOrders
from service.vault import Vault


@dataclass(frozen=True)
class StaffContext:
    settings: StaffSettings
    clock: Clock
    accounts: StaffService
    orders: StaffOrders
    sessions: StaffSessionStore
    auditor: Auditor


def build_staff_context(
    client: redis.Redis,
    settings: StaffSettings,
    clock: Clock,
    agencies: AgencyService,
    vault: Vault,
    charges: ChargeService,
) -> StaffContext:
    auditor = Auditor(AuditLog(client, agencies.keyring), clock)
    sessions = StaffSessionStore(
        client, idle_seconds=settings.idle_timeout_seconds, absolute_seconds=settings.absolute_timeout_seconds
    )
    accounts = StaffService(StaffStore(client), sessions, agencies, auditor, clock)
    orders = StaffOrders(agencies, vault, charges, StaffOrderStore(client), FormNonces(client), auditor, clock)
    return StaffContext(settings, clock, accounts, orders, sessions, auditor)
