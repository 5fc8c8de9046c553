"""atheris harness for atomicplug.safezip: any bytes are extracted inside the target or refused.

Run ``python fuzz/fuzz_safezip.py [--structured] [--make-corpus=DIR] [libFuzzer flags] [CORPUS_DIR]``
(see fuzz/README.md). Any exception other than PackageError, or a path that
appears outside the target, is a crash libFuzzer reports and saves.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

from _common import pop_flag, pop_option, require_atheris

atheris = require_atheris()

with atheris.instrument_imports():
    from atomicplug.config import ExtractLimits
    from atomicplug.errors import PackageError
    from atomicplug.safezip import extract, read_metadata

LIMITS = ExtractLimits(max_unpacked_bytes=4 * 1024 * 1024, max_entries=200)
WORK = Path(tempfile.mkdtemp(prefix="fuzz-safezip-"))
atexit.register(shutil.rmtree, WORK, True)
ZIP = WORK / "pkg.zip"
TARGET = WORK / "out"


def check_bytes(data: bytes) -> None:
    """The property: PackageError or a tree wholly inside TARGET; nothing else changes."""
    ZIP.write_bytes(data)
    with contextlib.suppress(PackageError):
        read_metadata(ZIP, LIMITS)
    try:
        result = extract(ZIP, TARGET, LIMITS)
    except PackageError:
        if TARGET.exists():
            raise AssertionError("refused extraction left the target behind") from None
    else:
        for f in result.files:
            path = TARGET / f.path
            if path.is_symlink() or not path.resolve().is_relative_to(TARGET.resolve()):
                raise AssertionError(f"{f.path} escaped the target")
    extra = {p.name for p in WORK.iterdir()} - {"pkg.zip", "out"}
    if extra:
        raise AssertionError(f"extraction wrote outside the target: {sorted(extra)}")
    shutil.rmtree(TARGET, ignore_errors=True)


def make_corpus(folder: Path) -> None:
    """Seed libFuzzer with well-formed and hostile archives."""
    from hostile_zips import RawEntry, build_zip, overlapping_zip, valid_package

    folder.mkdir(parents=True, exist_ok=True)
    seeds = {
        "valid.zip": build_zip(valid_package()),
        "overlap.zip": overlapping_zip(),
        "dotdot.zip": build_zip(valid_package(RawEntry("backend/../../x", b"x"))),
        "symlink.zip": build_zip(valid_package(RawEntry("backend/l", b"/", method=0, external_attr=0o120777 << 16))),
        "stored.zip": build_zip([RawEntry(e.name, e.data, method=0) for e in valid_package()]),
    }
    for name, data in seeds.items():
        (folder / name).write_bytes(data)
    print(f"wrote {len(seeds)} seeds to {folder}")


def main() -> None:
    corpus = pop_option("--make-corpus")
    if corpus:
        make_corpus(Path(corpus))
        return
    if pop_flag("--structured"):
        from hypothesis import HealthCheck, given, settings
        from strategies import archives

        @settings(database=None, suppress_health_check=list(HealthCheck), deadline=None)
        @given(archives())
        def structured(data: bytes) -> None:
            check_bytes(data)

        atheris.Setup(sys.argv, structured.hypothesis.fuzz_one_input)
    else:
        atheris.Setup(sys.argv, check_bytes)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
