"""Opaque token ids drawn in batches are the ids ``secrets.token_urlsafe`` would make, in the card's shard."""

from __future__ import annotations

import base64
import re
from unittest import mock

from service.adapters.redis_base import SHARDS, card_shard, shard_of
from service.adapters.store import VaultStore
from service.domain import tokens
from service.domain.ids import looks_card_free
from service.domain.tokens import OPAQUE_DRAW_BATCH, is_token_id, opaque_token_candidates

OPAQUE_ID = re.compile(r"tok_[A-Za-z0-9_-]{24}")


def test_a_batch_is_the_ids_of_its_18_byte_slices() -> None:
    """Cutting one encoded batch every 24 characters equals encoding each 18-byte slice on its own."""
    raw = bytes((i * 7 + 3) % 256 for i in range(18 * OPAQUE_DRAW_BATCH))
    with mock.patch.object(tokens.os, "urandom", return_value=raw):
        candidates = opaque_token_candidates()
        drawn = [next(candidates) for _ in range(OPAQUE_DRAW_BATCH)]
    expected = ["tok_" + base64.urlsafe_b64encode(raw[i : i + 18]).decode() for i in range(0, len(raw), 18)]
    assert drawn == expected
    assert all(OPAQUE_ID.fullmatch(token_id) for token_id in drawn)


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
