"""Intake: only the verified bytes are ever installed (issue 13 item 1, docs/design.md "Intake").

A package is streamed once: the signature digest, the sha256 and the copy into
``<home>/downloads/<sha256>.zip`` come from the same read. Everything after
(planning, extraction, recovery) sees only that read-only blob.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from atomicplug.installer import Installer
from atomicplug.testing import PluginSpec, build_package


def _hold_lock(lock_path: Path) -> subprocess.Popen[str]:
    """Another process holding the writer lock until its stdin closes."""
    code = (
        "import sys, filelock\n"
        f"lock = filelock.FileLock({str(lock_path)!r}); lock.acquire()\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_package_swapped_while_the_install_waits_for_the_lock_is_not_what_gets_installed(home, tmp_path):
    signed = home.package("shop", files={"backend/code.py": "WHO = 'publisher'\n"})
    # The attacker's zip: same id and version, unsigned, written over the signed one.
    evil = build_package(
        PluginSpec(id="shop", files={"backend/code.py": "WHO = 'attacker'\n"}), tmp_path / "evil", key=None
    )
    home.config.home.mkdir(parents=True, exist_ok=True)
    holder = _hold_lock(home.config.lock_path)
    messages: list[str] = []
    waiting = threading.Event()

    def progress(event: object) -> None:
        messages.append(str(event))
        if "waiting" in str(event):
            waiting.set()

    errors: list[BaseException] = []

    def install() -> None:
        try:
            Installer(home.config, progress=progress).install_file(signed)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    worker = threading.Thread(target=install)
    worker.start()
    try:
        # The install has verified the package and now waits for the lock (or, on code that
        # says nothing while it waits, has had ample time to get there).
        waiting.wait(timeout=30)  # set within milliseconds; generous for a loaded machine
        signed.write_bytes(evil.read_bytes())
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    worker.join(timeout=60)
    assert not errors, errors
    installed = (home.config.backend_addons / "shop" / "code.py").read_text()
    assert installed == "WHO = 'publisher'\n"
    assert all(report.ok for report in home.installer.verify())


def test_the_plan_and_journal_carry_the_sha256_never_the_users_path(home):
    from atomicplug.journal.reader import all_journals

    package = home.package("shop")
    home.installer.install_file(package)
    [journal] = all_journals(home.config.journal_dir)
    text = journal.path.read_text()
    assert str(package) not in text and package.name not in text
    [step] = journal.begin["plan"]["steps"]
    import hashlib

    assert step["package"] == hashlib.sha256(package.read_bytes()).hexdigest()
    # Once the tree is made the blob is released: its files are objects, and the key that signed it is recorded.
    assert not (home.config.downloads_dir / f"{step['package']}.zip").exists()
    assert home.installer.list()[0]["signed_by"] == home.publisher.secret.key_id_hex


def test_a_blob_whose_tree_is_kept_is_released_too(home):
    """An upgrade back to a kept tree takes the package in but stages nothing: its blob must not stay
    behind either (the large bench plugin's 67 MB, replaced at the next intake of it)."""
    home.installer.install_file(home.package("shop", "1.0.0"))
    newer = home.package("shop", "1.1.0")
    home.installer.install_file(newer)
    home.installer.rollback("shop")
    home.installer.install_file(newer)  # 1.1.0's tree is kept: reused, not staged
    assert home.installer.list()[0]["version"] == "1.1.0"
    assert not list(home.config.downloads_dir.glob("*.zip")), "the blob of a package whose tree is reused is dropped"
    assert not list(home.config.downloads_dir.glob("*.minisig"))


def test_a_blob_given_again_for_what_is_installed_is_released(home):
    """Installing what is already installed changes nothing (or repairs its tree): its blob is not kept either."""
    package = home.package("shop", "1.0.0")
    home.installer.install_file(package)
    home.installer.install_file(package)
    assert not list(home.config.downloads_dir.glob("*.zip"))


def test_the_blob_is_read_only_and_is_what_extraction_reads(home, monkeypatch):
    from atomicplug import intake

    seen: list[tuple[int, bool]] = []
    real = intake.open_blob

    def watching(config, sha256):
        blob = intake.blob_path(config, sha256)
        seen.append((blob.stat().st_mode & 0o222, blob.is_file()))
        return real(config, sha256)

    monkeypatch.setattr(intake, "open_blob", watching)
    home.installer.install_file(home.package("shop"))
    assert seen == [(0, True)], "the blob exists, read-only, when staging opens it"


@pytest.mark.parametrize("alongside", [False, True], ids=["checked-before", "checked-while-extracting"])
def test_a_blob_damaged_after_intake_refuses_the_install_and_changes_nothing(home, monkeypatch, alongside):
    """Staging hashes the blob again on the file it extracts from: before, or (large blobs) alongside."""
    from atomicplug import intake
    from atomicplug.errors import PackageError
    from atomicplug.testing import snapshot

    if alongside:
        monkeypatch.setattr(intake, "_RECHECK_ALONGSIDE_BYTES", 0)
    from atomicplug.stages.stage import objects_of

    home.installer.install_file(home.package("base"))
    before = snapshot(home.config)
    objects_before = set(objects_of(home.config))
    real = intake.open_blob

    def damaging(config, sha256):
        blob = intake.blob_path(config, sha256)
        blob.chmod(0o644)
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0x01
        blob.write_bytes(bytes(data))
        return real(config, sha256)

    monkeypatch.setattr(intake, "open_blob", damaging)
    with pytest.raises(PackageError, match="was damaged"):
        home.installer.install_file(home.package("shop"))
    assert snapshot(home.config) == before
    assert not list(home.config.downloads_dir.glob("*.zip")), "the damaged blob is removed"
    assert not (home.config.home / "store" / "shop").exists()
    assert set(objects_of(home.config)) == objects_before, "the objects made from the damaged bytes are removed"


def test_a_blob_another_process_removed_is_an_operation_error_not_a_security_refusal(home):
    """Found from outside: a package taken in whose blob a gc (or an install of the same bytes) dropped
    before it was staged said exit 3, a security refusal the panel shows as "malformed or unsafe"."""
    from atomicplug.errors import OperationError, SecurityError
    from atomicplug.intake import blob_path, take_in_file
    from atomicplug.testing import snapshot

    package = take_in_file(home.config, home.package("shop"))
    blob_path(home.config, package.sha256).unlink()
    before = snapshot(home.config)
    with pytest.raises(OperationError, match=r"is no longer in .* install it again") as info:
        home.installer.install_packages([package])
    assert not isinstance(info.value, SecurityError) and info.value.exit_code == 1
    assert snapshot(home.config) == before


def test_recovery_never_needs_the_users_file(home_factory):
    from crash_harness import find_interruption

    from atomicplug.testing import snapshot

    packages: dict[str, Path] = {}

    def make(label: str):
        site = home_factory(name=label)
        tables = {"0001_t": ("CREATE TABLE shop_t (id INTEGER);", "DROP TABLE shop_t;")}
        packages[label] = site.package("shop", migrations=tables)
        return site

    def install(site) -> None:
        Installer(site.config).install_file(packages[site.root.name])

    point = find_interruption(make, lambda site: None, install, committed=True)
    site = make("after-commit")
    from atomicplug.testing import crash_at

    assert crash_at(lambda: install(site), point)
    package = packages["after-commit"]
    package.unlink()
    package.with_name(package.name + ".minisig").unlink()
    assert Installer(site.config).recover()[0][1] == "forward"
    assert snapshot(site.config)["plugins"] == {"shop": ("1.0.0", True)}


def test_a_refused_package_leaves_nothing_behind(home):
    package = home.package("shop")
    data = bytearray(package.read_bytes())
    data[60] ^= 0xFF
    package.write_bytes(bytes(data))
    from atomicplug.errors import SignatureError

    with pytest.raises(SignatureError):
        home.installer.install_file(package)
    assert not home.config.home.exists()


def test_a_folder_is_not_a_package(home, tmp_path):
    from atomicplug.errors import UsageError

    folder = tmp_path / "src-folder"
    folder.mkdir()
    with pytest.raises(UsageError, match="is a folder, not a package"):
        home.installer.install_file(folder)


def _count_validations(monkeypatch) -> list[int]:
    from atomicplug.safezip import _archive

    calls: list[int] = []
    real = _archive._validate

    def counting(fp, limits):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(fp, limits)

    monkeypatch.setattr(_archive, "_validate", counting)
    monkeypatch.setattr(_archive, "_remembered_answers", type(_archive._remembered_answers)())
    return calls


def test_an_install_validates_the_archive_once_intake_and_staging_share_it(home, monkeypatch):
    """The same bytes (by sha256) validate the same way: intake's validation serves the extraction."""
    calls = _count_validations(monkeypatch)
    home.installer.install_file(home.package("shop"))
    assert len(calls) == 1
    assert [p["id"] for p in home.installer.list()] == ["shop"]
    home.installer.install_file(home.package("shop", version="1.1.0"))  # other bytes: validated on their own
    assert len(calls) == 2


def test_an_install_parses_the_package_record_once(home, monkeypatch):
    """Intake's parsed RECORD serves the extraction too (5000 lines of the bench plugin: ~0.05 s each parse)."""
    from atomicplug.package_record import PackageRecord

    _count_validations(monkeypatch)
    parses: list[int] = []
    real = PackageRecord.from_bytes.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(PackageRecord, "from_bytes", classmethod(lambda cls, data, names=None: parses.append(1) or real(cls, data, names)))
    home.installer.install_file(home.package("shop"))
    assert len(parses) == 1
    assert [p["id"] for p in home.installer.list()] == ["shop"]


def test_an_archive_read_without_its_sha256_or_refused_is_validated_every_time(home, tmp_path, monkeypatch):
    from atomicplug import safezip
    from atomicplug.errors import PackageError

    calls = _count_validations(monkeypatch)
    package = home.package("shop")
    safezip.read_metadata(package)
    safezip.read_metadata(package)
    assert len(calls) == 2
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty central directory: no metadata.json
    for _ in range(2):
        with pytest.raises(PackageError):
            safezip.read_metadata(broken, sha256="0" * 64)
    assert len(calls) == 4


def test_what_an_intake_killed_half_way_leaves_in_downloads_is_removed_by_gc(home, tmp_path):
    """Intake runs before the journal's begin, so no recovery ever saw its temp file: gc removes the
    temp files of writers that died in downloads/ and manifest_cache/ (a live writer's stay)."""
    import os
    import signal
    import time

    from atomicplug.fsutil import TEMP_SUFFIX

    pipe = tmp_path / "slow.zip"  # a package that arrives slowly: the install reads it as it comes
    os.mkfifo(pipe)
    (tmp_path / "slow.zip.minisig").write_text(home.package("alpha").with_name("alpha-1.0.0.zip.minisig").read_text())
    install = subprocess.Popen([sys.executable, "-m", "atomicplug", "--config", str(home.config_path), "install", str(pipe)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    with open(pipe, "wb") as writer:
        writer.write(b"PK\x03\x04" + b"\0" * 65536)
        writer.flush()
        downloads = home.config.downloads_dir
        deadline = time.monotonic() + 60
        while not (downloads.is_dir() and any(p.name.startswith(".intake.") for p in downloads.iterdir())):
            assert time.monotonic() < deadline, "the install should be taking the package in"
            time.sleep(0.02)
        install.send_signal(signal.SIGKILL)
        install.wait()
    left = [p for p in downloads.iterdir() if p.name.endswith(TEMP_SUFFIX)]
    assert left, "the kill should leave the intake's temp file"
    cache = home.config.home / "manifest_cache"
    cache.mkdir()
    dead = cache / f".0123456789abcdef.json.{install.pid}-abcd{TEMP_SUFFIX}"
    live = cache / f".0123456789abcdef.json.{os.getpid()}-abcd{TEMP_SUFFIX}"
    dead.write_bytes(b"{")
    live.write_bytes(b"{")
    collected = subprocess.run([sys.executable, "-m", "atomicplug", "--config", str(home.config_path), "gc"], capture_output=True, text=True)
    assert collected.returncode == 0, collected.stderr
    assert not any(p.exists() for p in (*left, dead))
    assert live.exists()


@pytest.mark.parametrize("lie", ["crc", "record hash"])
def test_a_package_whose_data_lies_is_refused_and_its_blob_not_kept(home, lie):
    """Found from outside: a lie that shows only when an entry is inflated (its CRC-32, its RECORD
    line's sha256) is refused during staging, inside the transaction; its verified-looking blob stayed
    in downloads/, to be taken for a good package again by the next install."""
    import hashlib

    from hostile_zips import build_zip, valid_metadata, valid_package, with_entry, with_record

    from atomicplug.errors import PackageError
    from atomicplug.minisign import sign_file
    from atomicplug.testing import snapshot

    metadata = valid_metadata(id="shop", requires=[], backend={"models": [], "routes": [], "dependencies": []},
                              frontend={"routes": [], "components": [], "dependencies": {}})  # fmt: skip
    entries = valid_package(metadata=metadata)
    index = [e.name for e in entries].index("backend/routes.py")
    if lie == "crc":
        entries = with_record(with_entry(entries, index, crc=0x12345678))
    else:
        true = hashlib.sha256(entries[index].data).hexdigest()
        entries = with_record(entries, with_record(entries)[-1].data.replace(true.encode(), b"0" * 64))
    package = home.root / "packages" / "shop-1.0.0.zip"
    package.parent.mkdir(parents=True, exist_ok=True)
    package.write_bytes(build_zip(entries))
    package.with_name(package.name + ".minisig").write_text(sign_file(package, home.publisher.secret))
    home.installer.install_file(home.package("other"))
    before = snapshot(home.config)

    def objects() -> set[str]:
        return {p.name for p in (home.config.home / "objects").rglob("*") if p.is_file()}

    made = objects()
    with pytest.raises(PackageError, match="CRC-32" if lie == "crc" else "RECORD"):
        home.installer.install_file(package)
    assert snapshot(home.config) == before
    assert not list(home.config.downloads_dir.iterdir())
    assert objects() == made  # what it inflated before the lie showed is removed again


def test_a_package_without_its_signature_is_refused_before_a_byte_is_read(home, tmp_path):
    """Found from outside: `install /dev/zero` copied without end before saying the signature was
    missing. A FIFO nobody writes to blocks whoever opens it: the refusal must come first."""
    fifo = tmp_path / "endless.zip"
    os.mkfifo(fifo)
    proc = subprocess.run(
        [sys.executable, "-m", "atomicplug", "--config", str(home.config_path), "install", str(fifo)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "ATOMICPLUG_RESIDENT": "off"},
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr == "atomicplug: error: endless.zip has no signature (endless.zip.minisig not found) and allow_unsigned is false\n"
    assert not home.config.home.exists()


def test_a_package_larger_than_the_limits_allow_is_refused_while_it_is_read(home_factory, tmp_path):
    from atomicplug.errors import PackageError
    from atomicplug.intake import size_cap
    from atomicplug.minisign import sign_file

    home = home_factory(max_unpacked_bytes=4096, max_entries=4)
    cap = size_cap(home.config.limits)
    big = tmp_path / "big.zip"
    big.write_bytes(os.urandom(cap + 1))
    big.with_name("big.zip.minisig").write_text(sign_file(big, home.publisher.secret))
    with pytest.raises(PackageError, match=f"^package big.zip is larger than {cap} bytes"):
        home.installer.install_file(big)
    assert not home.config.home.exists()


def test_a_failing_cleanup_does_not_replace_the_error_intake_reports(home, monkeypatch):
    """Found from outside: ENOSPC writing the signature, then EIO removing the temp copy: the line
    named the EIO of the cleanup, and the real first failure was lost."""
    import errno
    from pathlib import Path as _Path

    from atomicplug import fsutil
    from atomicplug.errors import StorageError

    package = home.package("shop")

    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    real_unlink = _Path.unlink

    def failing_for_the_temp(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if ".intake." in self.name:
            raise OSError(errno.EIO, "Input/output error", str(self))
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(fsutil, "atomic_write_bytes", full)
    monkeypatch.setattr(_Path, "unlink", failing_for_the_temp)
    with pytest.raises(StorageError) as info:
        home.installer.install_file(package)
    assert "ENOSPC" in str(info.value) and "EIO" not in str(info.value), str(info.value)
