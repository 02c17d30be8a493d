"""Opaque token ids kept sorted by shard are fresh random ids, each in the shard it is taken for, never given twice."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from collections import Counter

from service.adapters.opaque_ids import OPAQUE_IDS, ShardedOpaqueIds
from service.adapters.redis_base import SHARDS, card_shard, shard_of
from service.adapters.store import VaultStore
from service.domain.ids import looks_card_free
from service.domain.tokens import is_token_id

OPAQUE_ID = re.compile(r"tok_[A-Za-z0-9_-]{24}")


def test_ids_are_the_18_byte_slices_of_one_random_read() -> None:
    """Each id is the URL-safe encoding of one 18-byte slice of the random read, as ``token_urlsafe(18)`` makes."""
    raw = bytes((i * 7 + 3) % 256 for i in range(18 * 64))
    slices = {"tok_" + base64.urlsafe_b64encode(raw[i : i + 18]).decode() for i in range(0, len(raw), 18)}
    pool = ShardedOpaqueIds(draw_size=64, per_shard=64, urandom=lambda n: raw[:n])
    by_shard = Counter(shard_of(token_id) for token_id in slices)
    taken = {pool.take(shard) for shard, count in by_shard.items() for _ in range(count)}
    assert taken == {token_id for token_id in slices if looks_card_free(token_id)}


def test_store_ids_land_in_the_cards_shard_card_free_and_all_different() -> None:
    seen: set[str] = set()
    for shard in range(SHARDS):
        fingerprint = f"{shard:x}" + "0" * 63
        for _ in range(50):
            token_id = VaultStore.new_opaque_token_id(fingerprint)
            assert OPAQUE_ID.fullmatch(token_id)
            assert is_token_id(token_id)
            assert shard_of(token_id) == card_shard(fingerprint)
            assert looks_card_free(token_id)
            seen.add(token_id)
    assert len(seen) == SHARDS * 50


def test_one_busy_shard_does_not_hoard_ids_for_the_others() -> None:
    pool = ShardedOpaqueIds(draw_size=256, per_shard=16)
    for _ in range(2000):
        pool.take(3)
    assert all(len(waiting) <= 16 for waiting in pool._waiting)


def test_a_card_free_check_still_applies_to_the_id_taken() -> None:
    """A random read that makes a card-length run of digits: that id is never handed out."""
    digits = base64.urlsafe_b64decode("123456789012345678901234")  # 24 base64 digits -> 18 bytes
    first = [digits * 16]  # then fresh random reads, as many as it takes to land one id in that shard
    pool = ShardedOpaqueIds(draw_size=16, per_shard=16, urandom=lambda n: first.pop()[:n] if first else os.urandom(n))
    shard = shard_of("tok_123456789012345678901234")
    token_id = pool.take(shard)
    assert not first
    assert looks_card_free(token_id)
    assert shard_of(token_id) == shard


def test_a_forked_child_does_not_hand_out_its_parents_waiting_ids() -> None:
    """``serve --workers N`` forks: ids waiting in the parent's pool must not be given in a child too."""
    OPAQUE_IDS.take(0)  # the pool now holds ids waiting in every shard
    waiting = {body.decode() for bucket in OPAQUE_IDS._waiting for body in bucket}
    assert waiting
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.close(read)
        ids = [OPAQUE_IDS.take(shard)[4:] for shard in range(SHARDS) for _ in range(16)]
        os.write(write, "\n".join(ids).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_ids = set(pipe.read().split("\n"))
    os.waitpid(pid, 0)
    assert len(child_ids) == SHARDS * 16
    assert not child_ids & waiting


def test_the_pool_is_filled_lazily_not_at_import() -> None:
    code = "from service.adapters.opaque_ids import OPAQUE_IDS; print(sum(map(len, OPAQUE_IDS._waiting)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "0\n"
