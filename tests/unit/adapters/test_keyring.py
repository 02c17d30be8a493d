"""The key hierarchy: AEAD bound to its owner, wrapped keys, master-key loading."""

import base64
import os
from pathlib import Path

import pytest

from service.adapters import crypto
from service.adapters.keyring import (
    ENV_MASTER_KEY,
    Keyring,
    MasterKey,
    MasterKeys,
    WrappedAgencyKeys,
    ensure_development_master_key,
    format_master_key,
    load_master_keys,
)
from service.errors import ConfigError, DecryptionFailed, KeyringError
from tests.support.cards import VISA


def keyring() -> Keyring:
    return Keyring(MasterKeys(MasterKey(crypto.random_key(), source="test")))


def agency_keys(ring: Keyring, agency_id: str = "agy_1") -> WrappedAgencyKeys:
    return WrappedAgencyKeys(1, {1: ring.new_data_key(agency_id, 1)}, ring.new_fingerprint_key(agency_id))


class TestAead:
    def test_ciphertext_moved_to_another_token_fails(self) -> None:
        """A card ciphertext only opens for the token id it was sealed to."""
        ring = keyring()
        keys = ring.agency_keys("agy_1", agency_keys(ring))
        blob = keys.seal_card("tok_a", b"secret")
        assert keys.open_card("tok_a", blob) == b"secret"
        with pytest.raises(DecryptionFailed):
            keys.open_card("tok_b", blob)

    def test_ciphertext_moved_to_another_agency_fails(self) -> None:
        """Even with the same token id, another agency's keys cannot open it."""
        ring = keyring()
        wrapped = agency_keys(ring, "agy_1")
        mine = ring.agency_keys("agy_1", wrapped)
        other = ring.agency_keys("agy_2", agency_keys(ring, "agy_2"))
        with pytest.raises(DecryptionFailed):
            other.open_card("tok_a", mine.seal_card("tok_a", b"secret"))

    def test_card_and_cvc_keys_are_separate(self) -> None:
        """A CVC ciphertext does not open as card data, and vice versa."""
        ring = keyring()
        keys = ring.agency_keys("agy_1", agency_keys(ring))
        with pytest.raises(DecryptionFailed):
            keys.open_card("tok_a", keys.seal_cvc("tok_a", b"737"))

    def test_blob_names_its_version_and_relabelling_fails(self) -> None:
        """The header names the key version, and editing it breaks authentication."""
        key = crypto.random_key()
        blob = crypto.encrypt(key, 7, b"x", b"aad")
        assert blob[:1] == b"C"
        assert crypto.blob_version(blob) == 7
        forged = blob[:1] + (8).to_bytes(4, "big") + blob[5:]
        with pytest.raises(DecryptionFailed):
            crypto.decrypt(key, forged, b"aad")

    def test_plaintext_is_not_in_the_ciphertext(self) -> None:
        """The card number does not appear in what is stored."""
        ring = keyring()
        keys = ring.agency_keys("agy_1", agency_keys(ring))
        assert VISA.encode() not in keys.seal_card("tok_a", VISA.encode())

    def test_nonces_are_fresh(self) -> None:
        """Sealing the same data twice gives different ciphertexts."""
        key = crypto.random_key()
        assert crypto.encrypt(key, 1, b"x", b"a") != crypto.encrypt(key, 1, b"x", b"a")


class TestWrapping:
    def test_unwrap_needs_the_same_master_key(self) -> None:
        """Data keys wrapped by one master key cannot be opened by another."""
        ring, stranger = keyring(), keyring()
        wrapped = agency_keys(ring)
        with pytest.raises(KeyringError, match="not loaded"):
            stranger.agency_keys("agy_1", wrapped)

    def test_previous_master_key_still_unwraps_and_rewrap_moves_to_current(self) -> None:
        """After a master rotation, old wraps open with the previous key and rewrap moves them."""
        old = MasterKey(crypto.random_key(), source="old")
        ring_old = Keyring(MasterKeys(old))
        wrapped = agency_keys(ring_old)
        sealed = ring_old.agency_keys("agy_1", wrapped).seal_card("tok_a", b"card")
        ring_new = Keyring(MasterKeys(MasterKey(crypto.random_key(), source="new"), (old,)))
        assert ring_new.agency_keys("agy_1", wrapped).open_card("tok_a", sealed) == b"card"
        changed = ring_new.rewrap_agency("agy_1", wrapped)
        assert set(changed) == {"dk:1", "fk"}
        moved = WrappedAgencyKeys(1, {1: changed["dk:1"]}, changed["fk"])
        only_new = Keyring(MasterKeys(ring_new.master.current))
        assert only_new.agency_keys("agy_1", moved).open_card("tok_a", sealed) == b"card"

    def test_fingerprint_is_per_agency_and_stable(self) -> None:
        """The same card fingerprints the same within an agency and differently across agencies."""
        ring = keyring()
        wrapped = agency_keys(ring, "agy_1")
        first = ring.agency_keys("agy_1", wrapped).fingerprint(VISA)
        assert first == Keyring(ring.master).agency_keys("agy_1", wrapped).fingerprint(VISA)
        assert first != ring.agency_keys("agy_2", agency_keys(ring, "agy_2")).fingerprint(VISA)
        assert VISA not in first

    def test_api_key_hash_needs_the_pepper(self) -> None:
        """API keys are hashed with a secret pepper; without it nothing is hashed."""
        ring = keyring()
        with pytest.raises(KeyringError):
            ring.api_key_hash("sk_x")
        ring.load_pepper(ring.new_wrapped_pepper())
        assert ring.api_key_hash("sk_x") == ring.api_key_hash("sk_x") != ring.api_key_hash("sk_y")

    def test_reprs_hide_keys(self) -> None:
        """Printing key objects never shows key bytes."""
        ring = keyring()
        keys = ring.agency_keys("agy_1", agency_keys(ring))
        secret_b64 = base64.b64encode(ring.master.current.secret).decode()
        for shown in (repr(ring), repr(ring.master), repr(keys), str(keys)):
            assert "redacted" in shown
            assert secret_b64 not in shown
            assert ring.master.current.secret.hex() not in shown


class TestMasterKeyLoading:
    def test_development_key_is_generated_once_with_mode_0600(self, tmp_path: Path) -> None:
        """The first start generates a development key readable only by its owner."""
        path = ensure_development_master_key(tmp_path)
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        assert ensure_development_master_key(tmp_path).read_text() == path.read_text()
        keys, warnings = load_master_keys(
            master_key_file=None, previous_files=(), data_dir=tmp_path, production=False, environ={}
        )
        assert keys.current.development
        assert any("development master key" in w for w in warnings)

    def test_production_refuses_the_development_key(self, tmp_path: Path) -> None:
        """Production mode will not run on a generated development key, wherever it is."""
        path = ensure_development_master_key(tmp_path)
        with pytest.raises(ConfigError, match="development key"):
            load_master_keys(master_key_file=path, previous_files=(), data_dir=tmp_path, production=True, environ={})

    def test_production_needs_a_key(self, tmp_path: Path) -> None:
        """Production with no key configured stops with a line naming keys.master_key_file."""
        with pytest.raises(ConfigError, match=r"keys\.master_key_file"):
            load_master_keys(master_key_file=None, previous_files=(), data_dir=tmp_path, production=True, environ={})

    def test_environment_key_wins(self, tmp_path: Path) -> None:
        """CARDVAULT_MASTER_KEY is used before any file."""
        secret = crypto.random_key()
        keys, _ = load_master_keys(
            master_key_file=tmp_path / "absent",
            previous_files=(),
            data_dir=tmp_path,
            production=True,
            environ={ENV_MASTER_KEY: format_master_key(secret)},
        )
        assert keys.current.secret == secret

    def test_loose_permissions_refused_in_production(self, tmp_path: Path) -> None:
        """A key file readable by others is refused in production and warned about in development."""
        path = tmp_path / "master.key"
        path.write_text(format_master_key(crypto.random_key()))
        os.chmod(path, 0o644)
        with pytest.raises(ConfigError, match="chmod 600"):
            load_master_keys(master_key_file=path, previous_files=(), data_dir=tmp_path, production=True, environ={})
        _, warnings = load_master_keys(
            master_key_file=path, previous_files=(), data_dir=tmp_path, production=False, environ={}
        )
        assert any("chmod 600" in w for w in warnings)

    @pytest.mark.parametrize("text", ["not base64!", base64.b64encode(b"short").decode()])
    def test_malformed_key(self, tmp_path: Path, text: str) -> None:
        """A key that is not base64 of 32 bytes is refused with a clear line."""
        with pytest.raises(ConfigError, match="master key from"):
            load_master_keys(
                master_key_file=None,
                previous_files=(),
                data_dir=tmp_path,
                production=False,
                environ={ENV_MASTER_KEY: text},
            )


class TestAgencySecrets:
    def test_secrets_survive_data_key_rotation_and_retirement(self) -> None:
        """Processor credentials and TOTP seeds stay readable after v1 is rotated out and retired."""
        ring = keyring()
        v1 = agency_keys(ring)
        sealed = ring.agency_keys("agy_1", v1).seal_secret("processor-credentials", b"transaction-key")
        only_v2 = WrappedAgencyKeys(2, {2: ring.new_data_key("agy_1", 2)}, v1.fingerprint_key)
        assert ring.agency_keys("agy_1", only_v2).open_secret("processor-credentials", sealed) == b"transaction-key"

    def test_secrets_are_bound_to_purpose_and_agency(self) -> None:
        """A sealed secret opens only for its purpose and agency, and is not card data."""
        ring = keyring()
        keys = ring.agency_keys("agy_1", agency_keys(ring))
        sealed = keys.seal_secret("totp:stf_1", b"seed")
        with pytest.raises(DecryptionFailed):
            keys.open_secret("totp:stf_2", sealed)
        with pytest.raises(DecryptionFailed):
            ring.agency_keys("agy_2", agency_keys(ring, "agy_2")).open_secret("totp:stf_1", sealed)
        with pytest.raises(DecryptionFailed):
            keys.open_card("-", sealed)
