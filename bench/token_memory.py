#!/usr/bin/env python3
"""Redis memory per stored token: N tokens (card with metadata, no CVC) through the vault's own code.

    python bench/token_memory.py                 # 100,000 tokens of distinct cards
    python bench/token_memory.py --same-card     # 100,000 tokens of one card (one fingerprint entry)
    python bench/token_memory.py -n 20000

It starts its own redis-server (Debian's, AOF with fsync always, like production) in a
temporary directory, creates an agency with the CLI's code, tokenizes N cards with
``Vault.tokenize`` (no HTTP: the figure is the stored bytes, not the request path) and
prints ``used_memory`` before and after, divided by N, with the share of each key kind
from ``MEMORY USAGE`` on a sample.  The card numbers are generated from the public Visa
test prefix (Luhn digit computed), never stored anywhere but in Redis, encrypted.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from service.agencies import Principal  # noqa: E402
from service.cli.runtime import open_runtime  # noqa: E402
from service.clock import system_clock  # noqa: E402
from service.domain.agencies import KeyKind  # noqa: E402
from service.domain.cards import parse_card_number  # noqa: E402
from service.settings_loader import load_settings  # noqa: E402
from service.vault import TokenizeRequest, Vault  # noqa: E402
from tests.support.generated_cards import distinct_cards  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

METADATA = {"order": "FL-2026-004217", "channel": "web"}
SLUG = "memory-bench"


def cli(env: dict[str, str], *args: str) -> None:
    subprocess.run(["cardvault", *args], env={**os.environ, **env}, check=True, capture_output=True)


async def fill(env: dict[str, str], count: int, same_card: bool) -> str:
    settings = load_settings(None, environ=env)
    async with open_runtime(settings) as rt:
        row = await rt.agencies.row(SLUG)
        principal = Principal(row.agency, KeyKind.SECRET, rt.agencies.keys_for(row))
        vault = Vault(rt.store, settings.tokens, system_clock)
        numbers = ["4242424242424242"] * count if same_card else distinct_cards(count)
        parsed = [parse_card_number(n) for n in numbers]

        async def one(i: int) -> None:
            await vault.tokenize(principal, TokenizeRequest(parsed[i], 12, 2031, metadata=METADATA))

        for start in range(0, count, 500):
            await asyncio.gather(*(one(i) for i in range(start, min(count, start + 500))))
        return row.agency.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--tokens", type=int, default=100_000)
    parser.add_argument("--same-card", action="store_true", help="every token of one card")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory) / "redis").start()
        try:
            key = Path(directory) / "master.key"
            env = {
                "CARDVAULT_REDIS_URL": server.url,
                "CARDVAULT_KEYS__MASTER_KEY_FILE": str(key),
                "CARDVAULT_DATA_DIR": str(Path(directory) / "var"),
            }
            cli(env, "keys", "generate-master", "--output", str(key))
            cli(env, "agency", "create", SLUG, "--origin", "https://shop.example.gov")
            plain = server.client()
            before = int(plain.info("memory")["used_memory"])
            started = time.monotonic()
            agency_id = asyncio.run(fill(env, args.tokens, args.same_card))
            seconds = time.monotonic() - started
            plain.execute_command("MEMORY", "PURGE")
            after = int(plain.info("memory")["used_memory"])
            kinds: collections.Counter[str] = collections.Counter()
            counts: collections.Counter[str] = collections.Counter()
            for key in plain.scan_iter(match=f"cv:{{{agency_id}.?}}:*", count=1000):
                kind = key.decode().split(":")[2]
                counts[kind] += 1
                if counts[kind] <= 2000:
                    kinds[kind] += int(plain.memory_usage(key, samples=0) or 0)
            version = plain.info("server")["redis_version"]
        finally:
            server.stop()
    print(
        f"redis-server {version}; {args.tokens} tokens ({'one card' if args.same_card else 'distinct cards'}, "
        f"metadata {METADATA}, no CVC) in {seconds:.1f} s"
    )
    print(f"used_memory: {before} -> {after} bytes: {(after - before) / args.tokens:.0f} bytes per token")
    for kind, total in sorted(kinds.items()):
        sampled = min(counts[kind], 2000)
        print(f"  {kind:>4}: {counts[kind]} keys, MEMORY USAGE {total / sampled:.0f} bytes each (sample of {sampled})")


if __name__ == "__main__":
    main()
