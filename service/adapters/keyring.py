"""The one place that holds key material: master keys, agency keys, the API-key pepper.

Key hierarchy::

    master key (file or CARDVAULT_MASTER_KEY; never in Redis, never in config)
    ├── wraps the system pepper           -> keyed hashes of API keys
    └── wraps, per agency:
        ├── data key v1, v2, ...          -> card key (derived), CVC key (derived)
        └── fingerprint key               -> keyed hash of the card number

Rotating an agency's data key adds a version that new writes use; old
versions stay readable until ``keys rewrap`` has moved everything and
``--retire`` deletes them.  The fingerprint key never rotates, so a card's
fingerprint (and de-duplication) survives rotation.  Deleting an agency's
wrapped keys makes every ciphertext of that agency unreadable: crypto-shredding.

Objects here print as ``<... redacted>``; nothing in this module logs keys.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from service.adapters import crypto
from service.domain.tokens import StoredCard
from service.errors import ConfigError, DecryptionFailed, KeyringError

DEV_KEY_PREFIX = "dev:"
DEV_KEY_FILENAME = "master.key"
ENV_MASTER_KEY = "CARDVAULT_MASTER_KEY"
SECRETS_KEY_VERSION = 0  # data keys start at 1, so a secret's blob can never be taken for card data


@dataclass(frozen=True, repr=False)
class MasterKey:
    """One master key with its public id and whether it is a generated development key."""

    secret: bytes
    development: bool = False
    source: str = ""
    key_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_id", crypto.master_key_id(self.secret))

    def __repr__(self) -> str:
        return f"<MasterKey {self.key_id.hex()} from {self.source or '?'} redacted>"


def parse_master_key(text: str, *, source: str) -> MasterKey:
    """Decode the one-line key format: optional ``dev:`` then base64 of 32 bytes."""
    line = text.strip()
    development = line.startswith(DEV_KEY_PREFIX)
    if development:
        line = line[len(DEV_KEY_PREFIX) :]
    try:
        secret = base64.b64decode(line.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            f"master key from {source}: not base64 (generate one with `cardvault keys generate-master`)"
        ) from None
    if len(secret) != crypto.KEY_BYTES:
        raise ConfigError(f"master key from {source}: must decode to 32 bytes, got {len(secret)}")
    return MasterKey(secret, development=development, source=source)


def format_master_key(secret: bytes, *, development: bool = False) -> str:
    encoded = base64.b64encode(secret).decode("ascii")
    return f"{DEV_KEY_PREFIX}{encoded}" if development else encoded


def read_master_key_file(path: Path, *, strict_permissions: bool) -> tuple[MasterKey, list[str]]:
    """Read a key file; warnings (or, when strict, a ConfigError) for loose permissions."""
    try:
        info = path.stat()
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"master key file {path}: cannot read it ({getattr(exc, 'strerror', exc)})") from None
    warnings: list[str] = []
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        message = (
            f"master key file {path}: readable by group or others (mode {stat.S_IMODE(info.st_mode):04o}); chmod 600 it"
        )
        if strict_permissions:
            raise ConfigError(message)
        warnings.append(message)
    return parse_master_key(text, source=str(path)), warnings


def write_secret_file(path: Path, content: str) -> None:
    """Create a file readable only by its owner, never briefly world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(content + "\n")


def ensure_development_master_key(data_dir: Path) -> Path:
    """The generated development key under data_dir, created on first start."""
    path = data_dir / DEV_KEY_FILENAME
    if not path.exists():
        write_secret_file(path, format_master_key(crypto.random_key(), development=True))
    return path


@dataclass(frozen=True, repr=False)
class MasterKeys:
    """The current master key (used to wrap) and previous ones (only to unwrap)."""

    current: MasterKey
    previous: tuple[MasterKey, ...] = ()

    def by_id(self, key_id: bytes) -> MasterKey:
        for key in (self.current, *self.previous):
            if key.key_id == key_id:
                return key
        raise KeyringError(
            f"data is wrapped under master key {key_id.hex()}, which is not loaded "
            "(add it to keys.previous_master_key_files)"
        )

    def __repr__(self) -> str:
        return f"<MasterKeys current={self.current.key_id.hex()} previous={len(self.previous)} redacted>"


@dataclass(frozen=True, repr=False)
class AgencyKeys:
    """An agency's unwrapped keys, ready for sealing card data and fingerprinting."""

    agency_id: str
    current_version: int
    card_keys: Mapping[int, bytes]
    cvc_keys: Mapping[int, bytes]
    fingerprint_key: bytes

    def __repr__(self) -> str:
        return f"<AgencyKeys {self.agency_id} v{self.current_version} redacted>"

    def _aad(self, purpose: str, object_id: str) -> bytes:
        return f"cardvault/v1/{purpose}/{self.agency_id}/{object_id}".encode()

    def _key(self, keys: Mapping[int, bytes], version: int) -> bytes:
        try:
            return keys[version]
        except KeyError:
            raise DecryptionFailed(f"data key version {version} of {self.agency_id} is gone") from None

    def seal_card(self, token_id: str, plaintext: bytes) -> bytes:
        v = self.current_version
        return crypto.encrypt(self._key(self.card_keys, v), v, plaintext, self._aad("card", token_id))

    def open_card(self, token_id: str, blob: bytes) -> bytes:
        key = self._key(self.card_keys, crypto.blob_version(blob))
        return crypto.decrypt(key, blob, self._aad("card", token_id))

    def seal_cvc(self, token_id: str, cvc: bytes) -> bytes:
        v = self.current_version
        return crypto.encrypt(self._key(self.cvc_keys, v), v, cvc, self._aad("cvc", token_id))

    def open_cvc(self, token_id: str, blob: bytes) -> bytes:
        key = self._key(self.cvc_keys, crypto.blob_version(blob))
        return crypto.decrypt(key, blob, self._aad("cvc", token_id))

    @property
    def secrets_key(self) -> bytes:
        """The key for operator secrets (processor credentials, staff TOTP seeds), derived from the
        fingerprint key: like it, it never rotates, so retiring an old data-key version can never make
        a stored credential unreadable; rotating such a secret means entering a new one. Shredding the
        agency destroys it with the rest."""
        return crypto.derive_key(self.fingerprint_key, b"cv-secrets")

    def seal_secret(self, purpose: str, plaintext: bytes, object_id: str = "-") -> bytes:
        """Seal an agency secret that is not card data; the blob names version 0 (the secrets key)."""
        return crypto.encrypt(self.secrets_key, SECRETS_KEY_VERSION, plaintext, self._aad(purpose, object_id))

    def open_secret(self, purpose: str, blob: bytes, object_id: str = "-") -> bytes:
        if crypto.blob_version(blob) != SECRETS_KEY_VERSION:
            raise DecryptionFailed("not an agency secret")
        return crypto.decrypt(self.secrets_key, blob, self._aad(purpose, object_id))

    def open_stored_card(self, token_id: str, blob: bytes) -> StoredCard:
        """A token's card record, decrypted and decoded (its fingerprint recomputed with this agency's key)."""
        return StoredCard.from_bytes(self.open_card(token_id, blob), self.fingerprint)

    def fingerprint(self, card_digits: str) -> str:
        """A stable keyed hash of the card number alone, unique to this agency."""
        return crypto.keyed_hash(self.fingerprint_key, card_digits.encode("ascii"), person=b"cv-fingerprint", size=16)


@dataclass(frozen=True)
class WrappedAgencyKeys:
    """What Redis holds for an agency's keys: only ciphertexts."""

    current_version: int
    data_keys: Mapping[int, bytes]
    fingerprint_key: bytes


class Keyring:
    """Wraps and unwraps with the master keys; remembers unwrapped agency keys."""

    def __init__(self, master: MasterKeys) -> None:
        self.master = master
        self._agency_cache: dict[tuple[str, int, tuple[tuple[int, bytes], ...], bytes], AgencyKeys] = {}
        self._pepper: bytes | None = None

    def __repr__(self) -> str:
        return f"<Keyring {self.master!r}>"

    # -- system pepper -------------------------------------------------
    @staticmethod
    def _pepper_aad() -> bytes:
        return b"cardvault/v1/system/api-key-pepper"

    def new_wrapped_pepper(self) -> bytes:
        return crypto.wrap(self.master.current.secret, crypto.random_key(), self._pepper_aad())

    def load_pepper(self, wrapped: bytes) -> None:
        master = self.master.by_id(crypto.wrapped_by(wrapped))
        self._pepper = crypto.unwrap(master.secret, wrapped, self._pepper_aad())

    def rewrap_pepper(self, wrapped: bytes) -> bytes | None:
        """The pepper wrapped under the current master key, or None when it already is."""
        return self._rewrap(wrapped, self._pepper_aad())

    @property
    def ready(self) -> bool:
        return self._pepper is not None

    def api_key_hash(self, api_key: str) -> str:
        if self._pepper is None:
            raise KeyringError("the keyring has not loaded its pepper yet")
        return crypto.keyed_hash(self._pepper, api_key.encode("utf-8"), person=b"cv-api-key")

    def mac(self, message: bytes, *, person: bytes) -> str:
        """A MAC under the pepper for one purpose (``person``), e.g. the hosted-fields frame proof."""
        if self._pepper is None:
            raise KeyringError("the keyring has not loaded its pepper yet")
        return crypto.keyed_hash(self._pepper, message, person=person)

    # -- agency keys ----------------------------------------------------
    @staticmethod
    def _data_key_aad(agency_id: str, version: int) -> bytes:
        return f"cardvault/v1/data-key/{agency_id}/{version}".encode()

    @staticmethod
    def _fingerprint_key_aad(agency_id: str) -> bytes:
        return f"cardvault/v1/fingerprint-key/{agency_id}".encode()

    def new_data_key(self, agency_id: str, version: int) -> bytes:
        return crypto.wrap(self.master.current.secret, crypto.random_key(), self._data_key_aad(agency_id, version))

    def new_fingerprint_key(self, agency_id: str) -> bytes:
        return crypto.wrap(self.master.current.secret, crypto.random_key(), self._fingerprint_key_aad(agency_id))

    def _unwrap(self, blob: bytes, aad: bytes) -> bytes:
        master = self.master.by_id(crypto.wrapped_by(blob))
        return crypto.unwrap(master.secret, blob, aad)

    def _rewrap(self, blob: bytes, aad: bytes) -> bytes | None:
        if crypto.wrapped_by(blob) == self.master.current.key_id:
            return None
        return crypto.wrap(self.master.current.secret, self._unwrap(blob, aad), aad)

    def rewrap_agency(self, agency_id: str, wrapped: WrappedAgencyKeys) -> dict[str, bytes]:
        """Fields to store so every key of the agency is wrapped by the current master key."""
        changed: dict[str, bytes] = {}
        for version, blob in wrapped.data_keys.items():
            new = self._rewrap(blob, self._data_key_aad(agency_id, version))
            if new is not None:
                changed[f"dk:{version}"] = new
        new_fk = self._rewrap(wrapped.fingerprint_key, self._fingerprint_key_aad(agency_id))
        if new_fk is not None:
            changed["fk"] = new_fk
        return changed

    def agency_keys(self, agency_id: str, wrapped: WrappedAgencyKeys) -> AgencyKeys:
        """Unwrap (once per distinct wrapped set) the keys an agency's requests need."""
        # Wrapped blobs are ciphertexts, safe to use as the cache key; a rotation or a
        # rewrap changes them, so a stale entry is never served.
        cache_key = (
            agency_id,
            wrapped.current_version,
            tuple(sorted(wrapped.data_keys.items())),
            wrapped.fingerprint_key,
        )
        cached = self._agency_cache.get(cache_key)
        if cached is not None:
            return cached
        if wrapped.current_version not in wrapped.data_keys:
            raise KeyringError(f"agency {agency_id} has no data key version {wrapped.current_version}")
        card_keys: dict[int, bytes] = {}
        cvc_keys: dict[int, bytes] = {}
        for version, blob in wrapped.data_keys.items():
            data_key = self._unwrap(blob, self._data_key_aad(agency_id, version))
            card_keys[version] = crypto.derive_key(data_key, b"cv-card")
            cvc_keys[version] = crypto.derive_key(data_key, b"cv-cvc")
        keys = AgencyKeys(
            agency_id=agency_id,
            current_version=wrapped.current_version,
            card_keys=card_keys,
            cvc_keys=cvc_keys,
            fingerprint_key=self._unwrap(wrapped.fingerprint_key, self._fingerprint_key_aad(agency_id)),
        )
        if len(self._agency_cache) > 10_000:
            self._agency_cache.clear()
        self._agency_cache[cache_key] = keys
        return keys


def load_master_keys(
    *,
    master_key_file: Path | None,
    previous_files: Sequence[Path],
    data_dir: Path,
    production: bool,
    environ: Mapping[str, str],
) -> tuple[MasterKeys, list[str]]:
    """Find the master key: CARDVAULT_MASTER_KEY, else the key file, else (development only) a generated one.

    Returns the keys and warnings to log; raises ConfigError for anything production must not run with.
    """
    warnings: list[str] = []
    if environ.get(ENV_MASTER_KEY):
        current = parse_master_key(environ[ENV_MASTER_KEY], source=ENV_MASTER_KEY)
    elif master_key_file is not None:
        current, found = read_master_key_file(master_key_file, strict_permissions=production)
        warnings += found
    elif production:
        raise ConfigError(
            f"keys.master_key_file: production mode needs a master key file or {ENV_MASTER_KEY} "
            "(create one with `cardvault keys generate-master`)"
        )
    else:
        current, found = read_master_key_file(ensure_development_master_key(data_dir), strict_permissions=False)
        warnings += found
    if current.development:
        if production:
            raise ConfigError(
                f"master key from {current.source}: this is a generated development key; production mode refuses it"
            )
        warnings.append(f"using the development master key {current.source}; never use it for real cards")
    previous = []
    for path in previous_files:
        key, found = read_master_key_file(path, strict_permissions=production)
        warnings += found
        previous.append(key)
    return MasterKeys(current, tuple(previous)), warnings
