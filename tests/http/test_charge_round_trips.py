"""A charge's last two writes, its final record and its audit record, travel to Redis together.

They are independent once the processor has answered, so the charge hands its audit record to the
same auto-pipelined batch as its final record (one round trip and one fsync, not two in a row).
The batches are observed as they are sent to a real Redis; what each holds is named by script.
Auto-pipelining is the single-server (and Sentinel) client's; on a Redis Cluster the two records
live on different slots and go to their own masters, so the cluster pass skips this.
"""

from __future__ import annotations

from typing import Any

import pytest

from service.adapters import autopipeline
from service.http.state import SERVICES
from tests.conftest import TEST_TOPOLOGY, AgencyKeys
from tests.http.charge_fixtures import Client, tokenize

pytestmark = pytest.mark.skipif(TEST_TOPOLOGY == "cluster", reason="auto-pipelining is the single-server client's")


async def test_the_final_record_and_the_audit_record_share_one_batch(
    pay_client: Client, sandbox_agency: AgencyKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = pay_client.app[SERVICES]
    assert services.charges is not None
    assert services.auditor is not None
    replace_sha = services.charges.store._replace.sha
    audit_sha = services.auditor.log._append.sha
    token = await tokenize(pay_client, sandbox_agency, cvc=None)
    warm = await pay_client.post("/v1/charges", json={"token": token, "amount": 100}, headers=sandbox_agency.auth)
    assert warm.status == 201  # the audit chain's head is known from here on

    batches: list[list[str]] = []
    send = autopipeline.AutoPipeline._send

    async def observed(self: autopipeline.AutoPipeline, batch: Any) -> Any:
        batches.append([str(args[1]) for entry in batch for args, _ in entry.commands if args[0] == "EVALSHA"])
        return await send(self, batch)

    monkeypatch.setattr(autopipeline.AutoPipeline, "_send", observed)
    answer = await pay_client.post("/v1/charges", json={"token": token, "amount": 100}, headers=sandbox_agency.auth)
    assert answer.status == 201
    with_final = [b for b in batches if replace_sha in b]
    assert len(with_final) == 1, batches
    assert audit_sha in with_final[0], batches
