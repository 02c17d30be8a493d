"""How an agency takes payments: its processor, its amount and velocity limits, its forward destinations.

Processor credentials are sealed under the agency's data key before they are
stored and are never printed: commands show the processor's name, endpoint
and login id only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from service.agencies import AgencyService
from service.domain.agencies import Agency
from service.domain.charges import MAX_AMOUNT
from service.domain.processing import (
    AUTHORIZE_NET_PRODUCTION,
    AUTHORIZE_NET_SANDBOX,
    InvalidProcessingInput,
    ProcessorConfig,
    ProcessorName,
    destinations_to_json,
    parse_destination,
    validate_endpoint,
)
from service.domain.velocity import Limit, VelocityOverrides, check_name

CREDENTIALS_PURPOSE = "processor-credentials"


class AgencySettingsService:
    def __init__(self, agencies: AgencyService) -> None:
        self.agencies = agencies

    async def set_processor(
        self,
        slug: str,
        name: ProcessorName,
        *,
        login_id: str | None = None,
        transaction_key: str | None = None,
        endpoint: str | None = None,
        production: bool = False,
    ) -> Agency:
        row = await self.agencies.row(slug)
        if name is ProcessorName.SANDBOX:
            if login_id or transaction_key or endpoint:
                raise InvalidProcessingInput("the sandbox processor takes no credentials or endpoint")
            config = ProcessorConfig()
        else:
            if not login_id or not transaction_key:
                raise InvalidProcessingInput("authorize_net needs --login-id and --transaction-key")
            keys = self.agencies.keys_for(row)
            default = AUTHORIZE_NET_PRODUCTION if production else AUTHORIZE_NET_SANDBOX
            config = ProcessorConfig(
                name=name,
                endpoint=validate_endpoint(endpoint or default),
                login_id=login_id,
                sealed_credentials=keys.seal_secret(CREDENTIALS_PURPOSE, transaction_key.encode()),
            )
        await self.agencies.store.set_agency_fields(row.agency.id, {"processor": config.to_json()})
        return (await self.agencies.row(slug)).agency

    async def set_max_amount(self, slug: str, max_amount: int | None) -> Agency:
        row = await self.agencies.row(slug)
        if max_amount is not None and not 1 <= max_amount <= MAX_AMOUNT:
            raise InvalidProcessingInput(f"--max-amount must be between 1 and {MAX_AMOUNT} (minor units)")
        await self.agencies.store.set_agency_fields(
            row.agency.id, {"max_amount": str(max_amount) if max_amount is not None else ""}
        )
        return (await self.agencies.row(slug)).agency

    async def set_velocity(
        self,
        slug: str,
        changes: Mapping[str, Limit | None],
        *,
        back_to_default: Iterable[str] = (),
        reset: bool = False,
    ) -> Agency:
        """Override SLUG's velocity limits by name (None: off for this agency), or go back to the defaults."""
        row = await self.agencies.row(slug)
        removed = [check_name(name) for name in back_to_default]
        for name in changes:
            check_name(name)
        current = VelocityOverrides() if reset else row.agency.velocity
        overrides = current.changed(changes, removed)
        await self.agencies.store.set_agency_fields(row.agency.id, {"velocity": overrides.to_json()})
        return (await self.agencies.row(slug)).agency

    async def allow_destination(self, slug: str, url: str, *, allow_private: bool = False) -> Agency:
        row = await self.agencies.row(slug)
        destination = parse_destination(url, allow_private=allow_private)
        kept = tuple(d for d in row.agency.destinations if d.url_prefix != destination.url_prefix)
        await self.agencies.store.set_agency_fields(
            row.agency.id, {"destinations": destinations_to_json((*kept, destination))}
        )
        return (await self.agencies.row(slug)).agency

    async def remove_destination(self, slug: str, url: str) -> Agency:
        row = await self.agencies.row(slug)
        target = parse_destination(url, allow_private=True).url_prefix
        kept = tuple(d for d in row.agency.destinations if d.url_prefix != target)
        if len(kept) == len(row.agency.destinations):
            raise InvalidProcessingInput(f"{url!r} is not on {slug}'s allowlist")
        await self.agencies.store.set_agency_fields(row.agency.id, {"destinations": destinations_to_json(kept)})
        return (await self.agencies.row(slug)).agency
