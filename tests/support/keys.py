"""Key names and key scans for tests that look inside Redis, from the service's own layout (redis_base).

Tests never spell a key out: the layout spreads an agency over a control tag
and sixteen data shards, and these helpers find all of it.
"""

from __future__ import annotations

from typing import Any

from service.adapters.redis_base import agency_control_pattern, agency_data_pattern, agency_key

__all__ = ["agency_data_keys", "agency_key", "agency_keys"]


def agency_data_keys(client: Any, agency_id: str, kind: str = "*") -> set[bytes]:
    """The agency's data keys (tokens, CVCs, fingerprints, charges, ...), or those of one ``kind`` (``tok``)."""
    pattern = agency_data_pattern(agency_id)
    if kind != "*":
        pattern = pattern[: -len("*")] + f"{kind}:*"
    return set(client.scan_iter(match=pattern, count=1000))


def agency_keys(client: Any, agency_id: str) -> set[bytes]:
    """Every key of the agency: its control records and its data (not its agency record, under ``{cv}``)."""
    return set(client.scan_iter(match=agency_control_pattern(agency_id), count=1000)) | agency_data_keys(
        client, agency_id
    )
