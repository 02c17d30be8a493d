"""Fixtures for the HTTP tests (the charges fixtures live in charge_fixtures.py)."""

from tests.http.charge_fixtures import anet_agency, authnet, pay_client, sandbox_agency

__all__ = ["anet_agency", "authnet", "pay_client", "sandbox_agency"]
