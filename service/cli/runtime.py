"""What CLI commands run against: the same Redis and keys a running serve uses.

With no Redis URL configured the command uses the embedded Redis's socket
when `cardvault serve` has it running, and otherwise starts it for as long as
the command runs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import click

from service.adapters.audit_log import AuditLog
from service.adapters.embedded_redis import EmbeddedRedis
from service.adapters.keyring import Keyring, load_master_keys
from service.adapters.redis_client import make_client
from service.adapters.store import VaultStore
from service.agencies import AgencyService
from service.audit import Auditor
from service.clock import system_clock
from service.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    store: VaultStore
    keyring: Keyring
    agencies: AgencyService
    auditor: Auditor  # operator commands record what they change (service.cli.operator_audit)


def master_keys_for(settings: Settings) -> tuple[Keyring, list[str]]:
    master, warnings = load_master_keys(
        master_key_file=settings.keys.master_key_file,
        previous_files=settings.keys.previous_master_key_files,
        data_dir=settings.data_dir,
        production=settings.production,
        environ=os.environ,
    )
    return Keyring(master), warnings


@contextlib.asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    keyring, warnings = master_keys_for(settings)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    started: EmbeddedRedis | None = None
    url = settings.redis.url
    if url is None:
        embedded = EmbeddedRedis(settings.data_dir)
        if not embedded.is_running():
            embedded.start()
            started = embedded
        url = embedded.url
    client = make_client(url, settings.redis)
    try:
        store = VaultStore(client)
        keyring.load_pepper(await store.system_pepper(keyring.new_wrapped_pepper()))
        agencies = AgencyService(store, keyring, system_clock, cache_seconds=0)
        yield Runtime(settings, store, keyring, agencies, Auditor(AuditLog(client, keyring), system_clock))
    finally:
        await client.aclose()
        if started is not None:
            started.stop()
