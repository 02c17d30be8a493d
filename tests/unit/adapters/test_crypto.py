"""The keyed hash behind fingerprints, API-key lookups and velocity buckets: hashlib's BLAKE2b, libsodium's digest.

Fingerprints and API-key hashes are stored, so the function may never change
its output: the standard library's BLAKE2b must give exactly what libsodium's
(which wrote every stored value so far) gives, for every size and person used.
"""

from __future__ import annotations

import nacl.encoding
import nacl.hash
from hypothesis import given
from hypothesis import strategies as st

from service.adapters import crypto

PERSONS = [b"cv-fingerprint", b"cv-api-key", b"cv-velocity", b"cv-audit"]


@given(
    key=st.binary(min_size=32, max_size=32),
    message=st.binary(max_size=300),
    person=st.sampled_from(PERSONS) | st.binary(max_size=16),
    size=st.sampled_from([16, 32]),
)
def test_keyed_hash_is_libsodiums_blake2b(key: bytes, message: bytes, person: bytes, size: int) -> None:
    expected = nacl.hash.blake2b(message, key=key, person=person, digest_size=size, encoder=nacl.encoding.HexEncoder)
    assert crypto.keyed_hash(key, message, person=person, size=size) == expected.decode("ascii")


def test_a_known_fingerprint_stays_the_same() -> None:
    """A fixed vector: what this function answered when fingerprints were first stored."""
    key = bytes(range(32))
    digest = nacl.hash.blake2b(
        b"4242424242424242", key=key, person=b"cv-fingerprint", digest_size=16, encoder=nacl.encoding.HexEncoder
    )
    assert crypto.keyed_hash(key, b"4242424242424242", person=b"cv-fingerprint", size=16) == digest.decode()
    assert len(digest) == 32
