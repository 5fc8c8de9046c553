"""Interop with the real ``minisign`` binary (docs/design.md: a zip signed with minisign installs).

minisign reads the password as one line from stdin when stdin is not a terminal.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers_signing import make_plugin_tree, minisign, needs_minisign, write_key_pair

from atomicplug.errors import SignatureError
from atomicplug.minisign import PublicKey, SecretKey, sign_file, verify_file
from atomicplug.packing import pack

pytestmark = needs_minisign


@pytest.fixture(scope="module")
def minisign_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Key pairs made by ``minisign -G``: one with -W (no password), one with password 'hunter2'."""
    folder = tmp_path_factory.mktemp("minisign-keys")
    keys = {}
    for name, password in (("plain", None), ("locked", "hunter2")):
        pub, sec = folder / f"{name}.pub", folder / f"{name}.key"
        args = ["-G", "-p", str(pub), "-s", str(sec)] + (["-W"] if password is None else [])
        done = minisign(*args, password=None if password is None else f"{password}\n{password}")
        assert done.returncode == 0, done.stderr
        keys[name] = (pub, sec)
    return keys


@pytest.fixture()
def zip_file(tmp_path: Path) -> Path:
    """A zip made by the `zip` tool, not by us."""
    tree = make_plugin_tree(tmp_path / "src")
    out = tmp_path / "tool.zip"
    subprocess.run(["zip", "-qr", str(out), "."], cwd=tree, check=True)
    return out


def test_minisign_signature_without_password_verifies(zip_file: Path, minisign_keys: dict[str, tuple[Path, Path]]) -> None:
    pub, sec = minisign_keys["plain"]
    done = minisign("-S", "-s", str(sec), "-m", str(zip_file), "-t", "release 1.0.0")
    assert done.returncode == 0, done.stderr
    sig = verify_file(zip_file, Path(f"{zip_file}.minisig"), [PublicKey.from_file(pub)])
    assert sig.trusted_comment == "release 1.0.0"


@pytest.mark.slow
def test_minisign_encrypted_key_signs_and_loads_in_atomicplug(
    zip_file: Path, minisign_keys: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    pub, sec = minisign_keys["locked"]
    done = minisign("-S", "-s", str(sec), "-m", str(zip_file), password="hunter2")
    assert done.returncode == 0, done.stderr
    verify_file(zip_file, Path(f"{zip_file}.minisig"), [PublicKey.from_file(pub)])
    # The same key, decrypted by us with minisign's default scrypt limits, signs for minisign -V.
    key = SecretKey.load(sec, "hunter2")
    assert key.public_key == PublicKey.from_file(pub)
    ours = tmp_path / "ours.minisig"
    ours.write_text(sign_file(zip_file, key))
    done = minisign("-V", "-p", str(pub), "-m", str(zip_file), "-x", str(ours))
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_minisign_encrypted_key_refuses_wrong_password(minisign_keys: dict[str, tuple[Path, Path]]) -> None:
    _, sec = minisign_keys["locked"]
    with pytest.raises(SignatureError, match="wrong password or corrupted secret key"):
        SecretKey.load(sec, "hunter3")


def test_minisign_unencrypted_key_loads_and_signs(zip_file: Path, minisign_keys: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    pub, sec = minisign_keys["plain"]
    key = SecretKey.load(sec)
    sig = tmp_path / "ours.minisig"
    sig.write_text(sign_file(zip_file, key))
    done = minisign("-V", "-H", "-p", str(pub), "-m", str(zip_file), "-x", str(sig))
    assert done.returncode == 0, done.stderr


def test_legacy_minisign_signature_verifies(zip_file: Path, minisign_keys: dict[str, tuple[Path, Path]]) -> None:
    pub, sec = minisign_keys["plain"]
    done = minisign("-S", "-l", "-s", str(sec), "-m", str(zip_file))
    assert done.returncode == 0, done.stderr
    sig = verify_file(zip_file, Path(f"{zip_file}.minisig"), [PublicKey.from_file(pub)])
    assert not sig.prehashed


def test_legacy_minisign_signature_refuses_tampered_file(zip_file: Path, minisign_keys: dict[str, tuple[Path, Path]]) -> None:
    pub, sec = minisign_keys["plain"]
    assert minisign("-S", "-l", "-s", str(sec), "-m", str(zip_file)).returncode == 0
    with zip_file.open("ab") as handle:
        handle.write(b"x")
    with pytest.raises(SignatureError, match="signature verification failed"):
        verify_file(zip_file, Path(f"{zip_file}.minisig"), [PublicKey.from_file(pub)])


def test_minisign_signature_refuses_tampered_file(zip_file: Path, minisign_keys: dict[str, tuple[Path, Path]]) -> None:
    pub, sec = minisign_keys["plain"]
    assert minisign("-S", "-s", str(sec), "-m", str(zip_file)).returncode == 0
    data = bytearray(zip_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    zip_file.write_bytes(bytes(data))
    with pytest.raises(SignatureError, match="signature verification failed"):
        verify_file(zip_file, Path(f"{zip_file}.minisig"), [PublicKey.from_file(pub)])


def test_our_signature_passes_minisign_verify(zip_file: Path, tmp_path: Path) -> None:
    pub, _, key = write_key_pair(tmp_path)
    sig = tmp_path / "ours.minisig"
    sig.write_text(sign_file(zip_file, key, trusted_comment="id:ai_chatbot\tversion:1.0.0"))
    done = minisign("-V", "-p", str(pub), "-m", str(zip_file), "-x", str(sig))
    assert done.returncode == 0, done.stderr
    assert "id:ai_chatbot\tversion:1.0.0" in done.stdout


def test_minisign_verify_refuses_our_signature_with_forged_trusted_comment(zip_file: Path, tmp_path: Path) -> None:
    pub, _, key = write_key_pair(tmp_path)
    lines = sign_file(zip_file, key).splitlines()
    lines[2] = "trusted comment: forged"
    sig = tmp_path / "forged.minisig"
    sig.write_text("\n".join(lines) + "\n")
    assert minisign("-V", "-p", str(pub), "-m", str(zip_file), "-x", str(sig)).returncode != 0


@pytest.mark.parametrize("password", [None, "s3cret"], ids=["unencrypted", "encrypted"])
def test_our_secret_key_signs_with_minisign(zip_file: Path, tmp_path: Path, password: str | None) -> None:
    pub, sec, _ = write_key_pair(tmp_path, password=password)
    done = minisign("-S", "-s", str(sec), "-m", str(zip_file), password=password)
    assert done.returncode == 0, done.stderr
    done = minisign("-V", "-p", str(pub), "-m", str(zip_file))
    assert done.returncode == 0, done.stderr
    verify_file(zip_file, Path(f"{zip_file}.minisig"), [PublicKey.from_file(pub)])


def test_our_encrypted_key_refused_by_minisign_with_wrong_password(zip_file: Path, tmp_path: Path) -> None:
    _, sec, _ = write_key_pair(tmp_path, password="s3cret")
    done = minisign("-S", "-s", str(sec), "-m", str(zip_file), password="nope")
    assert done.returncode != 0
    assert "password" in (done.stdout + done.stderr).lower()


def test_packed_zip_verifies_with_minisign(tmp_path: Path) -> None:
    pub, _, key = write_key_pair(tmp_path)
    packed = pack(make_plugin_tree(tmp_path / "src"), key, tmp_path / "out.zip")
    done = minisign("-V", "-H", "-p", str(pub), "-m", str(packed.zip_path))
    assert done.returncode == 0, done.stderr
    assert "file:out.zip\thashed" in done.stdout
