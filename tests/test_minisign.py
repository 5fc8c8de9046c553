"""minisign-compatible keys and signatures: round trips and one test per refusal rule."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from helpers_signing import FAST_KDF, write_key_pair

from atomicplug.errors import ConfigError, SignatureError
from atomicplug.minisign import (
    PublicKey,
    SecretKey,
    Signature,
    _pickparams,
    load_trusted_keys,
    sign_file,
    verify_file,
)


@pytest.fixture()
def key() -> SecretKey:
    return SecretKey.generate()


@pytest.fixture()
def signed(tmp_path: Path, key: SecretKey) -> tuple[Path, str]:
    target = tmp_path / "plugin.zip"
    target.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 100)
    return target, sign_file(target, key)


def _replace_line(text: str, index: int, line: str) -> str:
    lines = text.splitlines()
    lines[index] = line
    return "\n".join(lines) + "\n"


def _reencode_block(text: str, edit: bytes) -> str:
    """Signature text whose line-2 block has its first two bytes (the algorithm) replaced."""
    raw = base64.b64decode(text.splitlines()[1])
    return _replace_line(text, 1, base64.b64encode(edit + raw[2:]).decode())


# -- round trips --------------------------------------------------------------


def test_signature_verifies_and_returns_trusted_comment(signed: tuple[Path, str], key: SecretKey) -> None:
    path, text = signed
    sig = verify_file(path, text, [key.public_key])
    assert sig.prehashed
    assert sig.trusted_comment.startswith("timestamp:")
    assert sig.trusted_comment.endswith(f"\tfile:{path.name}\thashed")


def test_verify_accepts_signature_path(signed: tuple[Path, str], key: SecretKey) -> None:
    path, text = signed
    sig_path = path.with_name(path.name + ".minisig")
    sig_path.write_text(text)
    assert verify_file(path, sig_path, [key.public_key]).key_id == key.key_id


def test_verify_picks_the_matching_key_among_several(signed: tuple[Path, str], key: SecretKey) -> None:
    path, text = signed
    others = [SecretKey.generate().public_key for _ in range(3)]
    assert verify_file(path, text, [*others, key.public_key]).key_id == key.key_id


def test_public_key_text_round_trip_and_minisign_key_id_format(key: SecretKey) -> None:
    text = key.public_key.to_text()
    assert PublicKey.from_text(text) == key.public_key
    assert key.key_id[::-1].hex().upper() in text.splitlines()[0]
    assert PublicKey.from_text(text.splitlines()[1]) == key.public_key  # bare base64, like `minisign -P`


def test_signature_text_round_trip(signed: tuple[Path, str]) -> None:
    _, text = signed
    assert Signature.from_text(text).to_text() == text


def test_unencrypted_secret_key_round_trip(key: SecretKey) -> None:
    text = key.to_text(None)
    assert not SecretKey.is_encrypted_text(text)
    assert SecretKey.from_text(text) == key


def test_encrypted_secret_key_round_trip(key: SecretKey) -> None:
    text = key.to_text("correct horse", **FAST_KDF)
    assert SecretKey.is_encrypted_text(text)
    assert SecretKey.from_text(text, "correct horse") == key


def test_password_callback_is_called_only_for_encrypted_keys(key: SecretKey) -> None:
    def ask() -> str:
        raise AssertionError("asked for a password for an unencrypted key")

    assert SecretKey.from_text(key.to_text(None), ask) == key
    assert SecretKey.from_text(key.to_text("pw", **FAST_KDF), lambda: "pw") == key


def test_secret_key_repr_hides_key_material(key: SecretKey) -> None:
    assert key.seed.hex() not in repr(key)


def test_pickparams_matches_libsodium() -> None:
    # minisign's default limits give scrypt N=2^20, r=8, p=1 (1 GiB).
    assert _pickparams(33_554_432, 1_073_741_824) == (1 << 20, 8, 1)
    assert _pickparams(1 << 20, 1 << 24) == (1 << 14, 8, 2)
    assert _pickparams(1 << 15, 1 << 24) == (1 << 10, 8, 1)
    assert _pickparams(1, 1 << 24) == (1 << 10, 8, 1)  # opslimit is raised to 32768


def test_sign_refuses_multiline_trusted_comment(signed: tuple[Path, str], key: SecretKey) -> None:
    path, _ = signed
    with pytest.raises(SignatureError, match="trusted comment must be one line"):
        sign_file(path, key, trusted_comment="a\nb")


def test_custom_trusted_comment_is_authenticated(signed: tuple[Path, str], key: SecretKey) -> None:
    path, _ = signed
    text = sign_file(path, key, trusted_comment="version:1.0.0\tid:ai_chatbot")
    assert verify_file(path, text, [key.public_key]).trusted_comment == "version:1.0.0\tid:ai_chatbot"


# -- one test per refusal rule ------------------------------------------------


def test_refuses_signature_by_untrusted_key_and_names_its_id(signed: tuple[Path, str], key: SecretKey) -> None:
    path, text = signed
    other = SecretKey.generate().public_key
    with pytest.raises(SignatureError, match=f"signed by untrusted key {key.key_id_hex} \\(key id mismatch") as info:
        verify_file(path, text, [other])
    assert other.key_id_hex in str(info.value)


def test_refuses_when_no_key_is_trusted(signed: tuple[Path, str]) -> None:
    path, text = signed
    with pytest.raises(SignatureError, match="trusted keys: none"):
        verify_file(path, text, [])


def test_refuses_tampered_file(signed: tuple[Path, str], key: SecretKey) -> None:
    path, text = signed
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(SignatureError, match="signature verification failed for plugin.zip: the file was modified"):
        verify_file(path, text, [key.public_key])


def test_refuses_appended_bytes(signed: tuple[Path, str], key: SecretKey) -> None:
    path, text = signed
    with path.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(SignatureError, match="signature verification failed"):
        verify_file(path, text, [key.public_key])


def test_refuses_same_key_id_but_different_key(signed: tuple[Path, str], key: SecretKey) -> None:
    path, text = signed
    impostor = PublicKey(key.key_id, SecretKey.generate().public_key.key)
    with pytest.raises(SignatureError, match="signature verification failed"):
        verify_file(path, text, [impostor])


def test_refuses_garbage_signature(signed: tuple[Path, str], key: SecretKey) -> None:
    path, _ = signed
    with pytest.raises(SignatureError, match="is not a minisign signature: expected 'untrusted comment:' on line 1"):
        verify_file(path, "<html>404 not found</html>\n", [key.public_key])


def test_refuses_signature_with_non_base64_line(signed: tuple[Path, str], key: SecretKey) -> None:
    path, text = signed
    with pytest.raises(SignatureError, match="is not a minisign signature: expected a base64 line"):
        verify_file(path, _replace_line(text, 1, "not base64 at all!"), [key.public_key])


def test_refuses_truncated_signature_lines(signed: tuple[Path, str], key: SecretKey) -> None:
    path, text = signed
    short = "\n".join(text.splitlines()[:2]) + "\n"
    with pytest.raises(SignatureError, match="is truncated: expected 4 lines, got 2"):
        verify_file(path, short, [key.public_key])


def test_refuses_truncated_signature_bytes(signed: tuple[Path, str], key: SecretKey) -> None:
    path, text = signed
    raw = base64.b64decode(text.splitlines()[1])
    cut = _replace_line(text, 1, base64.b64encode(raw[:40]).decode())
    with pytest.raises(SignatureError, match="is truncated: expected 74 \\+ 64 signature bytes, got 40 \\+ 64"):
        verify_file(path, cut, [key.public_key])


def test_refuses_tampered_trusted_comment(signed: tuple[Path, str], key: SecretKey) -> None:
    path, text = signed
    forged = _replace_line(text, 2, "trusted comment: timestamp:0\tfile:other.zip\thashed")
    with pytest.raises(SignatureError, match="trusted comment .* was tampered with: global signature does not verify"):
        verify_file(path, forged, [key.public_key])


def test_untrusted_comment_may_change(signed: tuple[Path, str], key: SecretKey) -> None:
    path, text = signed
    verify_file(path, _replace_line(text, 0, "untrusted comment: anything at all"), [key.public_key])


def test_refuses_unknown_signature_algorithm(signed: tuple[Path, str], key: SecretKey) -> None:
    path, text = signed
    with pytest.raises(SignatureError, match="uses unknown signature algorithm b'XX' \\(expected 'ED' or 'Ed'\\)"):
        verify_file(path, _reencode_block(text, b"XX"), [key.public_key])


def test_refuses_prehashed_signature_relabelled_legacy(signed: tuple[Path, str], key: SecretKey) -> None:
    path, text = signed
    with pytest.raises(SignatureError, match="signature verification failed"):
        verify_file(path, _reencode_block(text, b"Ed"), [key.public_key])


def test_refuses_wrong_password(key: SecretKey) -> None:
    text = key.to_text("right", **FAST_KDF)
    with pytest.raises(SignatureError, match="wrong password or corrupted secret key"):
        SecretKey.from_text(text, "wrong")


def test_refuses_encrypted_key_without_password(key: SecretKey) -> None:
    with pytest.raises(SignatureError, match="is encrypted: a password is needed"):
        SecretKey.from_text(key.to_text("pw", **FAST_KDF), None)


def test_refuses_corrupted_unencrypted_secret_key(key: SecretKey) -> None:
    lines = key.to_text(None).splitlines()
    raw = bytearray(base64.b64decode(lines[1]))
    raw[60] ^= 1  # inside the secret key bytes
    text = f"{lines[0]}\n{base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(SignatureError, match="corrupted secret key .*checksum mismatch"):
        SecretKey.from_text(text)


def test_refuses_garbage_secret_key() -> None:
    with pytest.raises(SignatureError, match="is not a minisign secret key"):
        SecretKey.from_text("untrusted comment: x\nAAAA\n")


def test_refuses_public_key_of_unknown_algorithm(key: SecretKey) -> None:
    raw = base64.b64decode(key.public_key.to_text().splitlines()[1])
    with pytest.raises(SignatureError, match="unknown key algorithm b'XX'"):
        PublicKey.from_text(base64.b64encode(b"XX" + raw[2:]).decode())


def test_refuses_missing_signature_file(signed: tuple[Path, str], key: SecretKey) -> None:
    path, _ = signed
    with pytest.raises(SignatureError, match="signature .*missing.minisig does not exist"):
        verify_file(path, path.with_name("missing.minisig"), [key.public_key])


# -- trusted keys from the config ---------------------------------------------


def test_load_trusted_keys_reads_every_file(tmp_path: Path) -> None:
    pub1, _, key1 = write_key_pair(tmp_path, name="a")
    pub2, _, key2 = write_key_pair(tmp_path, name="b")
    assert load_trusted_keys([pub1, pub2]) == (key1.public_key, key2.public_key)


def test_load_trusted_keys_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trusted key file .*nope.pub does not exist"):
        load_trusted_keys([tmp_path / "nope.pub"])


def test_load_trusted_keys_refuses_garbage_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pub"
    bad.write_text("untrusted comment: hello\nthis is not a key\n")
    with pytest.raises(SignatureError, match=r"public key .*bad.pub is not a minisign public key"):
        load_trusted_keys([bad])
