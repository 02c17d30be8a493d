"""The only module that calls pynacl: AEAD, key wrapping, key derivation, keyed hashes.

Every stored secret is XChaCha20-Poly1305 (IETF) with a random 192-bit nonce
and associated data that names what the plaintext belongs to (agency, token,
purpose), so a ciphertext copied to another token or agency fails to decrypt.

Ciphertext layout (all integers big-endian)::

    data blob     b"C" | key version (u32) | nonce (24) | ciphertext+tag
    wrapped key   b"W" | master key id (8) | nonce (24) | ciphertext+tag

The header bytes are part of the associated data, so a blob cannot be
relabelled with another version or master key id either.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.utils

from service.errors import DecryptionFailed, KeyringError

KEY_BYTES = 32
NONCE_BYTES = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
TAG_BYTES = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES
DATA_TAG = b"C"
WRAP_TAG = b"W"
_DATA_HEADER = struct.Struct(">cI")
MASTER_KEY_ID_BYTES = 8


def random_key() -> bytes:
    """A fresh 256-bit key from the operating system's CSPRNG."""
    return nacl.utils.random(KEY_BYTES)


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise KeyringError(f"a key must be {KEY_BYTES} bytes, got {len(key)}")


def _seal(key: bytes, header: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = nacl.utils.random(NONCE_BYTES)
    sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, header + aad, nonce, key)
    return header + nonce + sealed


def _open(key: bytes, header: bytes, blob: bytes, aad: bytes) -> bytes:
    body = blob[len(header) :]
    nonce, sealed = body[:NONCE_BYTES], body[NONCE_BYTES:]
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, header + aad, nonce, key)
    except nacl.exceptions.CryptoError:
        raise DecryptionFailed("ciphertext did not authenticate") from None


def encrypt(key: bytes, version: int, plaintext: bytes, aad: bytes) -> bytes:
    """Seal ``plaintext`` under data key ``version``; the blob names the version."""
    _check_key(key)
    return _seal(key, _DATA_HEADER.pack(DATA_TAG, version), plaintext, aad)


def blob_version(blob: bytes) -> int:
    """Which key version sealed this data blob (read before choosing the key)."""
    if len(blob) < _DATA_HEADER.size + NONCE_BYTES + TAG_BYTES or blob[:1] != DATA_TAG:
        raise DecryptionFailed("not a cardvault data ciphertext")
    version: int = _DATA_HEADER.unpack_from(blob)[1]
    return version


def decrypt(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Open a data blob made by :func:`encrypt` with the key of its version."""
    _check_key(key)
    blob_version(blob)
    return _open(key, blob[: _DATA_HEADER.size], blob, aad)


def master_key_id(master_key: bytes) -> bytes:
    """A short public identifier of a master key: which one wrapped a data key."""
    _check_key(master_key)
    digest: bytes = nacl.hash.blake2b(
        b"",
        key=master_key,
        person=b"cv-master-key-id",
        digest_size=MASTER_KEY_ID_BYTES,
        encoder=nacl.encoding.RawEncoder,
    )
    return digest


def wrap(master_key: bytes, data_key: bytes, aad: bytes) -> bytes:
    """Seal a data key under the master key; the blob names the master key by id."""
    _check_key(data_key)
    return _seal(master_key, WRAP_TAG + master_key_id(master_key), data_key, aad)


def wrapped_by(blob: bytes) -> bytes:
    """The id of the master key that wrapped this blob."""
    if len(blob) < 1 + MASTER_KEY_ID_BYTES + NONCE_BYTES or blob[:1] != WRAP_TAG:
        raise KeyringError("not a cardvault wrapped key")
    return blob[1 : 1 + MASTER_KEY_ID_BYTES]


def unwrap(master_key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Open a wrapped data key; DecryptionFailed if the master key or label is wrong."""
    if not hmac.compare_digest(wrapped_by(blob), master_key_id(master_key)):
        raise DecryptionFailed("wrapped under a different master key")
    key = _open(master_key, blob[: 1 + MASTER_KEY_ID_BYTES], blob, aad)
    _check_key(key)
    return key


def derive_key(parent: bytes, purpose: bytes) -> bytes:
    """An independent subkey of ``parent`` for one purpose (BLAKE2b as a keyed PRF)."""
    _check_key(parent)
    if not 1 <= len(purpose) <= 16:
        raise ValueError("purpose must be 1 to 16 bytes")
    derived: bytes = nacl.hash.blake2b(
        b"", key=parent, person=purpose, digest_size=KEY_BYTES, encoder=nacl.encoding.RawEncoder
    )
    return derived


def keyed_hash(key: bytes, message: bytes, *, person: bytes, size: int = 32) -> str:
    """Hex BLAKE2b MAC: fingerprints and API-key lookups without storing the input.

    The standard library's BLAKE2b (the same function, parameter block and
    digest as libsodium's: tests/unit/adapters/test_crypto.py checks them
    against each other) because it is on every request three or four times
    (the API-key lookup, the fingerprint, the velocity buckets) and PyNaCl's
    wrapper costs about 8.5 us a call where hashlib's costs under 1 us.
    """
    _check_key(key)
    return hashlib.blake2b(message, digest_size=size, key=key, person=person).hexdigest()
