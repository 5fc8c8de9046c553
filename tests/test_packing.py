"""``pack``: deterministic zips, refusals, and the keygen/pack command line."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers_signing import make_plugin_tree, write_key_pair

from atomicplug.cli import main
from atomicplug.errors import MetadataError, PackageError
from atomicplug.minisign import PublicKey, SecretKey, verify_file
from atomicplug.package_record import PackageRecord, RecordEntry
from atomicplug.packing import pack
from atomicplug.safezip import extract


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    return make_plugin_tree(tmp_path / "src")


@pytest.fixture()
def key() -> SecretKey:
    return SecretKey.generate()


# -- determinism --------------------------------------------------------------


def test_same_tree_gives_same_bytes(tree: Path, tmp_path: Path, key: SecretKey) -> None:
    first = pack(tree, key, tmp_path / "a.zip").zip_path.read_bytes()
    second = pack(tree, key, tmp_path / "b.zip").zip_path.read_bytes()
    assert first == second


def test_same_bytes_after_touching_mtimes_and_modes(tree: Path, tmp_path: Path, key: SecretKey) -> None:
    before = pack(tree, key, tmp_path / "a.zip").zip_path.read_bytes()
    for path in tree.rglob("*"):
        os.utime(path, (1_700_000_000, 1_700_000_000))
    (tree / "backend" / "models.py").chmod(0o755)
    after = pack(tree, key, tmp_path / "b.zip").zip_path.read_bytes()
    assert before == after


def test_same_bytes_from_a_copy_created_in_another_order(tree: Path, tmp_path: Path, key: SecretKey) -> None:
    copy = tmp_path / "copy"
    files = sorted((p for p in tree.rglob("*") if p.is_file()), reverse=True)
    for path in files:
        target = copy / path.relative_to(tree)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    assert pack(tree, key, tmp_path / "a.zip").zip_path.read_bytes() == pack(copy, key, tmp_path / "b.zip").zip_path.read_bytes()


def test_content_change_changes_bytes(tree: Path, tmp_path: Path, key: SecretKey) -> None:
    before = pack(tree, key, tmp_path / "a.zip").zip_path.read_bytes()
    (tree / "migrations" / "up.sql").write_text("CREATE TABLE other (id INTEGER);\n")
    assert pack(tree, key, tmp_path / "b.zip").zip_path.read_bytes() != before


def test_zip_entries_sorted_fixed_time_and_mode_without_directories(tree: Path, tmp_path: Path, key: SecretKey) -> None:
    (tree / "backend" / "__pycache__").mkdir()
    (tree / "backend" / "__pycache__" / "models.cpython-311.pyc").write_bytes(b"\0")
    (tree / "backend" / "stale.pyc").write_bytes(b"\0")
    with zipfile.ZipFile(pack(tree, key, tmp_path / "out.zip").zip_path) as archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        assert names[:-1] == sorted(names[:-1]) and names[-1] == "RECORD"
        assert "metadata.json" in names and "backend/models.py" in names
        assert not any(n.endswith("/") or "__pycache__" in n or n.endswith(".pyc") for n in names)
        for info in infos:
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.external_attr >> 16 == 0o100644
            assert info.compress_type == zipfile.ZIP_DEFLATED
        assert archive.read("migrations/down.sql") == b"DROP TABLE chat;\n"


def test_record_lists_every_other_entry_with_size_and_sha256(tree: Path, tmp_path: Path, key: SecretKey) -> None:
    with zipfile.ZipFile(pack(tree, key, tmp_path / "out.zip").zip_path) as archive:
        text = archive.read("RECORD").decode()
        record = PackageRecord.from_bytes(text.encode())
        files = {n: archive.read(n) for n in archive.namelist() if n != "RECORD"}
    assert set(record.files) == set(files)
    for name, data in files.items():
        assert record.files[name] == RecordEntry(name, len(data), hashlib.sha256(data).hexdigest())
    assert text.splitlines()[-1] == "RECORD,,"
    assert text.splitlines()[0] == f"README.md,sha256={hashlib.sha256(files['README.md']).hexdigest()},{len(files['README.md'])}"


def test_packed_record_is_accepted_by_the_safe_extractor(tree: Path, tmp_path: Path, key: SecretKey) -> None:
    packed = pack(tree, key, tmp_path / "out.zip")
    result = extract(packed.zip_path, tmp_path / "x")
    assert "RECORD" in {f.path for f in result.files}


def test_refuses_a_record_file_in_the_source_tree(tree: Path, tmp_path: Path, key: SecretKey) -> None:
    (tree / "RECORD").write_text("backend/x.py,sha256=00,1\n")
    with pytest.raises(PackageError, match="cannot pack RECORD: pack writes the package's RECORD itself"):
        pack(tree, key, tmp_path / "out.zip")
    assert not (tmp_path / "out.zip").exists()


def test_signature_verifies_with_trusted_comment_like_minisign(tree: Path, tmp_path: Path, key: SecretKey) -> None:
    packed = pack(tree, key, tmp_path / "out.zip")
    assert packed.signature_path == tmp_path / "out.zip.minisig"
    sig = verify_file(packed.zip_path, packed.signature_path, [key.public_key])
    assert sig.trusted_comment.startswith("timestamp:")
    assert sig.trusted_comment.endswith("\tfile:out.zip\thashed")


def test_default_output_is_id_version_zip_in_cwd(tree: Path, tmp_path: Path, key: SecretKey, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "dist"
    out.mkdir()
    monkeypatch.chdir(out)
    packed = pack(tree, key)
    assert packed.zip_path == out / "ai_chatbot-1.0.0.zip"
    assert (out / "ai_chatbot-1.0.0.zip.minisig").is_file()


# -- refusals -----------------------------------------------------------------


def test_refuses_unknown_top_level_file(tree: Path, tmp_path: Path, key: SecretKey) -> None:
    (tree / "setup.py").write_text("")
    with pytest.raises(PackageError, match="cannot pack setup.py: not allowed at the top level"):
        pack(tree, key, tmp_path / "out.zip")
    assert not (tmp_path / "out.zip").exists()


def test_refuses_unknown_top_level_folder(tree: Path, tmp_path: Path, key: SecretKey) -> None:
    (tree / "docs").mkdir()
    with pytest.raises(PackageError, match="cannot pack docs: not allowed at the top level"):
        pack(tree, key, tmp_path / "out.zip")


def test_allows_readme_license_changelog_variants(tree: Path, tmp_path: Path, key: SecretKey) -> None:
    for name in ("LICENSE", "CHANGELOG.md", "README.rst"):
        (tree / name).write_text(name)
    with zipfile.ZipFile(pack(tree, key, tmp_path / "out.zip").zip_path) as archive:
        assert {"LICENSE", "CHANGELOG.md", "README.rst"} <= set(archive.namelist())


def test_refuses_symlinked_file(tree: Path, tmp_path: Path, key: SecretKey) -> None:
    (tmp_path / "secret").write_text("x")
    (tree / "backend" / "link.py").symlink_to(tmp_path / "secret")
    with pytest.raises(PackageError, match="cannot pack backend/link.py: symlinks are not allowed"):
        pack(tree, key, tmp_path / "out.zip")


def test_refuses_symlinked_folder(tree: Path, tmp_path: Path, key: SecretKey) -> None:
    (tree / "frontend" / "shared").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(PackageError, match="cannot pack frontend/shared: symlinks are not allowed"):
        pack(tree, key, tmp_path / "out.zip")


def test_refuses_fifo(tree: Path, tmp_path: Path, key: SecretKey) -> None:
    os.mkfifo(tree / "backend" / "pipe")
    with pytest.raises(PackageError, match="cannot pack backend/pipe: only regular files and folders"):
        pack(tree, key, tmp_path / "out.zip")


def test_refuses_names_clashing_after_case_folding(tree: Path, tmp_path: Path, key: SecretKey) -> None:
    (tree / "backend" / "Models.py").write_text("")
    with pytest.raises(PackageError, match="its name clashes with .* after case-folding") as info:
        pack(tree, key, tmp_path / "out.zip")
    assert "backend/Models.py" in str(info.value) and "backend/models.py" in str(info.value)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("a\tb.py", "has a control character in its name"),
        ("/".join(["d" * 200] * 6) + "/x.py", "has a path longer than 1024 bytes"),
        (os.fsdecode(b"a\xff.py"), "is not valid UTF-8"),
        ("m" * 245 + ".py", "is a backend module whose name leaves no room for its compiled file's name"),
    ],
)
def test_refuses_names_the_installer_would_refuse(tree: Path, tmp_path: Path, key: SecretKey, name: str, why: str) -> None:
    """Found from outside: pack made a zip the installer refused (a tab in a name), or failed with a
    traceback (a name that is not UTF-8)."""
    (tree / "backend" / name).parent.mkdir(parents=True, exist_ok=True)
    (tree / "backend" / name).write_text("")
    with pytest.raises(PackageError, match=f"^cannot pack backend/.*: {why}"):
        pack(tree, key, tmp_path / "out.zip")
    assert not (tmp_path / "out.zip").exists()


def test_refuses_to_write_over_what_is_not_a_file(tree: Path, tmp_path: Path, key: SecretKey) -> None:
    """Found from outside: `-o` onto a FIFO (as root, /dev/null) renamed the zip over it."""
    from atomicplug.errors import UsageError

    fifo = tmp_path / "out.zip"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="is not a regular file"):
        pack(tree, key, fifo)
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and not (tmp_path / "out.zip.minisig").exists()


def test_an_output_folder_gets_the_default_name_inside_it(tree: Path, tmp_path: Path, key: SecretKey) -> None:
    folder = tmp_path / "dist"
    folder.mkdir()
    packed = pack(tree, key, folder)
    assert packed.zip_path == folder / f"{packed.metadata.id}-{packed.metadata.version}.zip" and packed.zip_path.is_file()


def test_cli_pack_with_an_empty_output_is_one_line(tree: Path, tmp_path: Path) -> None:
    _, secret, _ = write_key_pair(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "atomicplug", "pack", str(tree), "--key", str(secret), "-o", ""],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (proc.returncode, proc.stderr) == (2, "atomicplug: error: -o needs a file name\n")


def test_refuses_missing_metadata(tree: Path, tmp_path: Path, key: SecretKey) -> None:
    (tree / "metadata.json").unlink()
    with pytest.raises(PackageError, match="expected a metadata.json file"):
        pack(tree, key, tmp_path / "out.zip")


def test_refuses_invalid_metadata(tree: Path, tmp_path: Path, key: SecretKey) -> None:
    (tree / "metadata.json").write_text(json.dumps({"id": "Bad-Id", "name": "x", "version": "1.0"}))
    with pytest.raises(MetadataError, match="'id'"):
        pack(tree, key, tmp_path / "out.zip")


# -- command line -------------------------------------------------------------


def test_cli_keygen_without_password_writes_usable_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pub, sec = tmp_path / "k.pub", tmp_path / "k.key"
    assert main(["keygen", "-p", str(pub), "-s", str(sec), "--no-password"]) == 0
    assert stat.S_IMODE(sec.stat().st_mode) == 0o600
    key = SecretKey.load(sec)
    assert PublicKey.from_file(pub) == key.public_key
    assert key.key_id_hex in capsys.readouterr().out


def test_cli_keygen_defaults_to_cwd_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["keygen", "--no-password"]) == 0
    assert (tmp_path / "atomicplug.pub").is_file() and (tmp_path / "atomicplug.key").is_file()


def test_cli_keygen_refuses_to_overwrite_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pub, sec = tmp_path / "k.pub", tmp_path / "k.key"
    sec.write_text("precious")
    assert main(["keygen", "-p", str(pub), "-s", str(sec), "--no-password"]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert sec.read_text() == "precious" and not pub.exists()
    assert main(["keygen", "-p", str(pub), "-s", str(sec), "--no-password", "--force"]) == 0
    assert stat.S_IMODE(sec.stat().st_mode) == 0o600
    SecretKey.load(sec)


@pytest.mark.slow
def test_cli_keygen_and_pack_with_password_from_env(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATOMICPLUG_KEY_PASSWORD", "from-env")
    pub, sec = tmp_path / "k.pub", tmp_path / "k.key"
    assert main(["keygen", "-p", str(pub), "-s", str(sec)]) == 0
    assert SecretKey.is_encrypted_text(sec.read_text())
    out = tmp_path / "out.zip"
    assert main(["pack", str(tree), "--key", str(sec), "-o", str(out)]) == 0
    verify_file(out, Path(f"{out}.minisig"), [PublicKey.from_file(pub)])


def test_cli_pack_reads_password_line_from_stdin(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATOMICPLUG_KEY_PASSWORD", raising=False)
    pub, sec, _ = write_key_pair(tmp_path, password="piped")
    monkeypatch.setattr(sys, "stdin", io.StringIO("piped\n"))
    out = tmp_path / "out.zip"
    assert main(["pack", str(tree), "--key", str(sec), "-o", str(out)]) == 0
    verify_file(out, Path(f"{out}.minisig"), [PublicKey.from_file(pub)])


def test_cli_pack_wrong_password_exits_3_with_one_line(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ATOMICPLUG_KEY_PASSWORD", raising=False)
    _, sec, _ = write_key_pair(tmp_path, password="right")
    monkeypatch.setattr(sys, "stdin", io.StringIO("wrong\n"))
    assert main(["pack", str(tree), "--key", str(sec), "-o", str(tmp_path / "out.zip")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "wrong password or corrupted secret key" in err


def test_cli_pack_refusal_exits_3(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, sec, _ = write_key_pair(tmp_path)
    (tree / "Makefile").write_text("")
    assert main(["pack", str(tree), "--key", str(sec), "-o", str(tmp_path / "out.zip")]) == 3
    assert "cannot pack Makefile" in capsys.readouterr().err


def test_cli_keygen_and_pack_via_subprocess(tree: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ATOMICPLUG_KEY_PASSWORD"}

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "atomicplug", *args], input=stdin, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
        )

    done = run("keygen", stdin="typed-password\n")
    assert done.returncode == 0, done.stderr
    assert SecretKey.is_encrypted_text((tmp_path / "atomicplug.key").read_text())
    nopw = run("keygen", "-p", "np.pub", "-s", "np.key", "--no-password")
    assert nopw.returncode == 0, nopw.stderr
    done = run("pack", str(tree), "--key", "np.key")
    assert done.returncode == 0, done.stderr
    zip_path = tmp_path / "ai_chatbot-1.0.0.zip"
    verify_file(zip_path, Path(f"{zip_path}.minisig"), [PublicKey.from_file(tmp_path / "np.pub")])
    again = run("keygen", "--no-password")
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert again.stderr.count("\n") == 1


def test_pack_asks_for_the_key_only_after_the_tree_is_valid(tree: Path, tmp_path: Path) -> None:
    (tree / "junk.txt").write_text("")

    def load_key() -> SecretKey:
        raise AssertionError("asked for the key although the tree is refused")

    with pytest.raises(PackageError, match="cannot pack junk.txt"):
        pack(tree, load_key, tmp_path / "out.zip")


def test_build_package_twice_for_one_id_and_version_does_not_carry_files_over(tmp_path: Path) -> None:
    """The test helper: a second spec of the same id and version in the same folder is packed alone."""
    from atomicplug.testing import PluginSpec, build_package

    first = build_package(PluginSpec(id="shop", files={"backend/extra.py": "X = 1\n"}), tmp_path, None)
    with zipfile.ZipFile(first) as packed:
        assert "backend/extra.py" in packed.namelist()
    second = build_package(PluginSpec(id="shop"), tmp_path, None)
    with zipfile.ZipFile(second) as packed:
        assert "backend/extra.py" not in packed.namelist()
