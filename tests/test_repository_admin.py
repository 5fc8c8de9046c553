"""``atomicplug repo init|add|sign|list`` through the CLI's main()."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from misbehaving_server import build_plugin, make_key

from atomicplug.cli import main
from atomicplug.minisign import PublicKey, verify_file
from atomicplug.repository.manifest import Manifest


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    pub, _ = make_key(tmp_path / "keys", "repo")
    other_pub, _ = make_key(tmp_path / "keys", "other")
    return {
        "pub": pub,
        "key": tmp_path / "keys" / "repo.key",
        "other_pub": other_pub,
        "other_key": tmp_path / "keys" / "other.key",
    }


def _secret(path: Path):  # noqa: ANN202
    from atomicplug.minisign import SecretKey

    return SecretKey.load(path)


def _manifest(repo: Path, pub: Path) -> Manifest:
    verify_file(repo / "manifest.json", repo / "manifest.json.minisig", [PublicKey.from_file(pub)])
    return Manifest.from_json_bytes((repo / "manifest.json").read_bytes())


def test_init_creates_signed_empty_manifest(tmp_path: Path, keys: dict[str, Path]) -> None:
    repo = tmp_path / "repo"
    assert main(["repo", "init", str(repo), "--key", str(keys["key"])]) == 0
    manifest = _manifest(repo, keys["pub"])
    assert manifest.version == 1 and manifest.plugins == ()
    assert (repo / "plugins").is_dir()
    assert len(list((repo / "keys").glob("*.pub"))) == 1


def test_init_refuses_existing_repository(tmp_path: Path, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    assert main(["repo", "init", str(repo), "--key", str(keys["key"])]) == 0
    assert main(["repo", "init", str(repo), "--key", str(keys["key"])]) == 2
    assert "already holds a repository" in capsys.readouterr().err


def test_add_copies_packages_and_bumps_version(tmp_path: Path, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    key = _secret(keys["key"])
    core = build_plugin(tmp_path / "pkgs", key, "email_core", "1.2.0")
    crm = build_plugin(tmp_path / "pkgs", key, "crm", "2.0.0", requires=["email_core>=1.0"])
    main(["repo", "init", str(repo), "--key", str(keys["key"])])
    assert main(["repo", "add", str(repo), str(core), str(crm), "--key", str(keys["key"])]) == 0
    manifest = _manifest(repo, keys["pub"])
    assert manifest.version == 2
    entry = manifest.find("crm", "2.0.0")
    assert entry is not None
    assert entry.download_url == "/plugins/crm/v2.0.0.zip"
    assert entry.requires == ("email_core>=1.0",)
    assert entry.size == crm.stat().st_size
    assert (repo / "plugins" / "crm" / "v2.0.0.zip").read_bytes() == crm.read_bytes()
    assert (repo / "plugins" / "crm" / "v2.0.0.zip.minisig").is_file()

    capsys.readouterr()
    assert main(["repo", "list", str(repo)]) == 0
    out = capsys.readouterr().out
    assert "crm 2.0.0" in out and "email_core 1.2.0" in out and "manifest version 2" in out


def test_readding_identical_package_is_a_noop(tmp_path: Path, keys: dict[str, Path]) -> None:
    repo = tmp_path / "repo"
    core = build_plugin(tmp_path / "pkgs", _secret(keys["key"]), "email_core", "1.0.0")
    main(["repo", "init", str(repo), "--key", str(keys["key"])])
    main(["repo", "add", str(repo), str(core), "--key", str(keys["key"])])
    before = (repo / "manifest.json").read_bytes()
    assert main(["repo", "add", str(repo), str(core), "--key", str(keys["key"])]) == 0
    assert (repo / "manifest.json").read_bytes() == before


def test_different_zip_for_same_version_is_refused(tmp_path: Path, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    key = _secret(keys["key"])
    first = build_plugin(tmp_path / "a", key, "email_core", "1.0.0", filler=100)
    second = build_plugin(tmp_path / "b", key, "email_core", "1.0.0", filler=200)
    main(["repo", "init", str(repo), "--key", str(keys["key"])])
    main(["repo", "add", str(repo), str(first), "--key", str(keys["key"])])
    before = (repo / "manifest.json").read_bytes()
    assert main(["repo", "add", str(repo), str(second), "--key", str(keys["key"])]) == 1
    assert "publish a new version" in capsys.readouterr().err
    assert (repo / "manifest.json").read_bytes() == before
    assert (repo / "plugins" / "email_core" / "v1.0.0.zip").read_bytes() == first.read_bytes()


def test_add_refuses_package_signed_by_unknown_key(tmp_path: Path, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    foreign = build_plugin(tmp_path / "pkgs", _secret(keys["other_key"]), "email_core", "1.0.0")
    main(["repo", "init", str(repo), "--key", str(keys["key"])])
    assert main(["repo", "add", str(repo), str(foreign), "--key", str(keys["key"])]) == 3
    assert "untrusted key" in capsys.readouterr().err
    assert not (repo / "plugins" / "email_core").exists()
    assert _manifest(repo, keys["pub"]).version == 1
    # With --trusted-key the publisher's key is accepted.
    cmd = ["repo", "add", str(repo), str(foreign), "--key", str(keys["key"]), "--trusted-key", str(keys["other_pub"])]
    assert main(cmd) == 0
    assert _manifest(repo, keys["pub"]).find("email_core", "1.0.0") is not None


def test_add_refuses_unsigned_package_and_writes_nothing(tmp_path: Path, keys: dict[str, Path]) -> None:
    repo = tmp_path / "repo"
    good = build_plugin(tmp_path / "pkgs", _secret(keys["key"]), "crm", "1.0.0")
    unsigned = build_plugin(tmp_path / "pkgs", None, "email_core", "1.0.0")
    main(["repo", "init", str(repo), "--key", str(keys["key"])])
    assert main(["repo", "add", str(repo), str(good), str(unsigned), "--key", str(keys["key"])]) == 3
    assert not (repo / "plugins" / "crm").exists()  # all or nothing
    assert _manifest(repo, keys["pub"]).version == 1


def test_add_refuses_tampered_zip(tmp_path: Path, keys: dict[str, Path]) -> None:
    repo = tmp_path / "repo"
    good = build_plugin(tmp_path / "pkgs", _secret(keys["key"]), "crm", "1.0.0")
    data = bytearray(good.read_bytes())
    data[40] ^= 1
    good.write_bytes(bytes(data))
    main(["repo", "init", str(repo), "--key", str(keys["key"])])
    assert main(["repo", "add", str(repo), str(good), "--key", str(keys["key"])]) == 3


def test_add_with_key_not_in_repository_is_refused(tmp_path: Path, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    pkg = build_plugin(tmp_path / "pkgs", _secret(keys["other_key"]), "crm", "1.0.0")
    main(["repo", "init", str(repo), "--key", str(keys["key"])])
    cmd = ["repo", "add", str(repo), str(pkg), "--key", str(keys["other_key"]), "--trusted-key", str(keys["other_pub"])]
    assert main(cmd) == 3
    assert "not one of" in capsys.readouterr().err


def test_sign_bumps_version_and_refreshes_expiry(tmp_path: Path, keys: dict[str, Path]) -> None:
    repo = tmp_path / "repo"
    main(["repo", "init", str(repo), "--key", str(keys["key"]), "--expires-days", "1"])
    first = _manifest(repo, keys["pub"])
    assert main(["repo", "sign", str(repo), "--key", str(keys["key"]), "--expires-days", "10"]) == 0
    second = _manifest(repo, keys["pub"])
    assert second.version == first.version + 1
    assert second.expires > first.expires


def test_list_json_and_tampered_manifest_refused(tmp_path: Path, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    pkg = build_plugin(tmp_path / "pkgs", _secret(keys["key"]), "crm", "1.0.0")
    main(["repo", "init", str(repo), "--key", str(keys["key"])])
    main(["repo", "add", str(repo), str(pkg), "--key", str(keys["key"])])
    capsys.readouterr()
    assert main(["repo", "list", str(repo), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["version"]) for r in rows] == [("crm", "1.0.0")]
    raw = json.loads((repo / "manifest.json").read_text())
    raw["plugins"][0]["size"] += 1
    (repo / "manifest.json").write_text(json.dumps(raw))
    assert main(["repo", "list", str(repo)]) == 3


def test_encrypted_key_password_from_environment(tmp_path: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    key = _secret(keys["key"])
    encrypted = tmp_path / "keys" / "enc.key"
    encrypted.write_text(key.to_text("s3cret", opslimit=1 << 20, memlimit=1 << 24))
    monkeypatch.setenv("ATOMICPLUG_KEY_PASSWORD", "s3cret")
    repo = tmp_path / "repo"
    assert main(["repo", "init", str(repo), "--key", str(encrypted)]) == 0
    assert _manifest(repo, keys["pub"]).version == 1
    shutil.rmtree(repo)
    monkeypatch.setenv("ATOMICPLUG_KEY_PASSWORD", "wrong")
    assert main(["repo", "init", str(repo), "--key", str(encrypted)]) == 3


def test_serve_refuses_a_folder_that_is_not_a_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(tmp_path), "--port", "0"]) == 2
    assert "not a repository" in capsys.readouterr().err
