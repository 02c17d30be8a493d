"""The audit hash chain: how records are linked, and how a walk over them finds what was changed.

Each chain (one per agency, one for the system) is a sequence of records
numbered ``seq`` = 1, 2, 3...  Every record carries the previous record's
hash (``prev``; the first record of a chain links to ``GENESIS``) and its own
``hash``: a keyed MAC over the chain's name and the record's canonical bytes
(sorted-key JSON with fixed separators, ASCII only, so one record has exactly
one encoding).  The MAC key is the vault's, never stored in clear (see
``service.adapters.audit_log``); without it nobody can write a record that
verifies, so an edit, an insertion or a forged replacement shows.

Three small signed documents complete the picture:

* the **head** (newest ``seq`` and ``hash``, MAC'd): a walk that ends before
  it shows records removed from the end (a truncation);
* the **anchor** (MAC'd): where the chain starts after the retention cut
  (``start_seq`` and the hash it links to, how many records were dropped
  before which time) and which record was archived last;
* and the walk that checks it all, ``service.domain.audit_verify``.

Pure logic: the MAC function is passed in (``Keyring.mac``).
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

GENESIS: Final = "0" * 64
RECORD_PERSON: Final = b"cv-audit-record"
HEAD_PERSON: Final = b"cv-audit-head"
ANCHOR_PERSON: Final = b"cv-audit-anchor"
STATUS_PERSON: Final = b"cv-audit-status"
CHAIN_FIELDS: Final = ("seq", "prev", "hash")
RELINKED: Final = "relinked"  # a record written after the head pointer had vanished says so (MAC'd)
HASH_PATTERN: Final = re.compile(r"^[0-9a-f]{64}\Z")


class Mac(Protocol):
    """A keyed hash for one purpose (``person``), hex: ``Keyring.mac``."""

    def __call__(self, message: bytes, *, person: bytes) -> str: ...


def canonical(value: Any) -> bytes:
    """The one byte encoding of a JSON value: sorted keys, no spaces, ASCII escapes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def record_message(chain: str, fields: Mapping[str, str]) -> bytes:
    """What a record's hash covers: its chain and every stored field but the hash itself."""
    return canonical({"chain": chain, "record": {k: v for k, v in fields.items() if k != "hash"}})


def link(chain: str, record: Mapping[str, str], seq: int, prev: str, mac: Mac, *, relinked: str = "") -> dict[str, str]:
    """The record's stored fields: its own, its place in the chain, and its hash."""
    fields = {**record, "seq": str(seq), "prev": prev}
    if relinked:
        fields[RELINKED] = relinked
    fields["hash"] = mac(record_message(chain, fields), person=RECORD_PERSON)
    return fields


def genuine_record(chain: str, fields: Mapping[str, str], mac: Mac) -> bool:
    claimed = fields.get("hash", "")
    return hmac.compare_digest(mac(record_message(chain, fields), person=RECORD_PERSON), claimed)


@dataclass(frozen=True)
class ChainEntry:
    """One stored record: its stream entry id and its fields exactly as stored."""

    entry_id: str
    fields: Mapping[str, str]

    @property
    def seq(self) -> int | None:
        text = self.fields.get("seq", "")
        return int(text) if text.isdigit() else None

    @property
    def at(self) -> float | None:
        try:
            return float(self.fields.get("at", ""))
        except ValueError:
            return None


@dataclass(frozen=True)
class Head:
    """The newest record of a chain, signed so it cannot be moved back to hide a truncation."""

    seq: int
    hash: str
    mac: str = ""

    @staticmethod
    def message(chain: str, seq: int, hash_: str) -> bytes:
        return canonical({"chain": chain, "head": {"hash": hash_, "seq": seq}})

    @classmethod
    def signed(cls, chain: str, seq: int, hash_: str, mac: Mac) -> Head:
        return cls(seq, hash_, mac(cls.message(chain, seq, hash_), person=HEAD_PERSON))

    def genuine(self, chain: str, mac: Mac) -> bool:
        return hmac.compare_digest(mac(self.message(chain, self.seq, self.hash), person=HEAD_PERSON), self.mac)


@dataclass(frozen=True)
class Anchor:
    """Where a chain starts after retention cuts, and what the archive holds; signed."""

    start_seq: int = 1  # the oldest record still kept
    start_prev: str = GENESIS  # the hash that record links to
    dropped: int = 0  # records dropped by retention, in all
    dropped_before: float = 0.0  # the latest retention cut: records older than this are gone
    archived_seq: int = 0  # the newest record moved to the archive (0: none yet)
    archived_hash: str = ""
    mac: str = ""

    def _body(self, chain: str) -> bytes:
        body = self.to_fields()
        body.pop("mac")
        return canonical({"anchor": body, "chain": chain})

    def signed(self, chain: str, mac: Mac) -> Anchor:
        return replace(self, mac=mac(self._body(chain), person=ANCHOR_PERSON))

    def genuine(self, chain: str, mac: Mac) -> bool:
        return hmac.compare_digest(mac(self._body(chain), person=ANCHOR_PERSON), self.mac)

    def to_fields(self) -> dict[str, str]:
        return {
            "start_seq": str(self.start_seq),
            "start_prev": self.start_prev,
            "dropped": str(self.dropped),
            "dropped_before": f"{self.dropped_before:.3f}",
            "archived_seq": str(self.archived_seq),
            "archived_hash": self.archived_hash,
            "mac": self.mac,
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Anchor:
        """Read a stored anchor; a damaged number reads as 0 and then fails its MAC."""

        def number(name: str) -> int:
            text = fields.get(name, "")
            return int(text) if text.isdigit() else 0

        try:
            before = float(fields.get("dropped_before", "0"))
        except ValueError:
            before = 0.0
        return cls(
            start_seq=number("start_seq"),
            start_prev=fields.get("start_prev", ""),
            dropped=number("dropped"),
            dropped_before=before,
            archived_seq=number("archived_seq"),
            archived_hash=fields.get("archived_hash", ""),
            mac=fields.get("mac", ""),
        )
