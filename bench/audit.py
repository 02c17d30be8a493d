#!/usr/bin/env python3
"""What the hash-chained audit log costs: appends, verification, and the space a record takes.

Runs against the embedded Redis (``appendonly yes``, ``appendfsync always``) in a temporary
directory, in this one process, and prints:

* ``append``  records per second and per-record latency (p50, p99) into one agency's chain,
  with ``--concurrency`` callers sharing one Auditor (one process: group commit), and with the
  same load split over ``--writers`` Auditors on their own connections (several processes
  colliding on one chain's head: relinking and turn-taking);
* ``verify``  records per second that `audit verify` walks, before and after `audit maintain`
  has moved them into the archive;
* ``bytes``   Redis memory per record in the stream and in the archive (MEMORY USAGE).

    python bench/audit.py                          # 20,000 records, 64 callers, 4 writers
    python bench/audit.py --records 5000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

import redis.asyncio as aioredis
from common import REPO_ROOT, log, machine_info, workspace

sys.path.insert(0, str(REPO_ROOT))

from service.adapters import crypto
from service.adapters.audit_log import AuditLog, archive_key, stream_key
from service.adapters.embedded_redis import EmbeddedRedis
from service.adapters.keyring import Keyring, MasterKey, MasterKeys
from service.adapters.store import VaultStore
from service.audit import Actor, Auditor
from service.audit_chains import verify_chain
from service.audit_retention import AuditMaintenance
from service.domain.audit import Outcome
from service.logs import configure_logging
from service.settings import AuditSettings

DAY = 86400.0


async def auditor_on(url: str, master: MasterKeys, clock: Any) -> tuple[aioredis.Redis, Auditor]:
    client = aioredis.Redis.from_url(url)
    keyring = Keyring(master)
    keyring.load_pepper(await VaultStore(client).system_pepper(keyring.new_wrapped_pepper()))
    return client, Auditor(AuditLog(client, keyring), clock)


async def append_phase(auditors: list[Auditor], chain: str, records: int, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    counter = iter(range(records))

    async def caller(auditor: Auditor) -> None:
        for n in counter:
            started = time.perf_counter()
            actor = Actor("", "stf_bench", "bench", "agent", "192.0.2.10")
            await auditor.record(actor, "order.create", Outcome.SUCCESS, f"ch_{n:024x}", "succeeded; 2500 usd",
                                 agency_id=chain)  # fmt: skip
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller(auditors[i % len(auditors)]) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "records": records,
        "writers": len(auditors),
        "concurrency": concurrency,
        "records_per_s": round(records / elapsed),
        "p50_ms": round(cuts[49] * 1000, 2),
        "p99_ms": round(cuts[98] * 1000, 2),
    }


async def verify_phase(auditor: Auditor, chain: str) -> dict[str, Any]:
    started = time.perf_counter()
    report = await verify_chain(auditor.log, chain)
    elapsed = time.perf_counter() - started
    assert report.ok, report.problems
    return {"records": report.records, "archived": report.archived, "records_per_s": round(report.records / elapsed)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    master = MasterKeys(MasterKey(crypto.random_key(), source="bench"))
    results: dict[str, Any] = {"machine": machine_info()}
    with workspace(args.keep) as directory:
        redis_server = EmbeddedRedis(directory)
        redis_server.start()
        try:
            now = time.time()
            clock_now = [now - 200 * DAY]  # records start old, so maintain has something to archive
            client, one = await auditor_on(redis_server.url, master, lambda: clock_now[0])
            log(f"append: {args.records} records, {args.concurrency} callers, one Auditor")
            results["append_one_process"] = await append_phase([one], "agy_bench1", args.records, args.concurrency)
            others = [await auditor_on(redis_server.url, master, time.time) for _ in range(args.writers)]
            log(f"append: {args.records} records, {args.concurrency} callers over {args.writers} Auditors")
            results["append_colliding_writers"] = await append_phase(
                [a for _, a in others], "agy_bench2", args.records, args.concurrency
            )
            stream_bytes = await client.memory_usage(stream_key("agy_bench1")) or 0
            results["verify_queryable"] = await verify_phase(one, "agy_bench1")
            clock_now[0] = now
            settings = AuditSettings(queryable_days=90, retention_days=3650)
            await AuditMaintenance(one, settings, Actor.operator("")).run(now + 100 * DAY, ["agy_bench1"])
            archive_bytes = await client.memory_usage(archive_key("agy_bench1")) or 0
            results["verify_archived"] = await verify_phase(one, "agy_bench1")
            results["bytes_per_record"] = {
                "stream": round(stream_bytes / args.records),
                "archive": round(archive_bytes / results["verify_archived"]["archived"]),
            }
            await client.aclose()
            for other, _ in others:
                await other.aclose()
        finally:
            redis_server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    configure_logging("warning", sys.stderr)
    results = asyncio.run(run(args))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for name, value in results.items():
        print(f"{name:<26} {value}")


if __name__ == "__main__":
    main()
