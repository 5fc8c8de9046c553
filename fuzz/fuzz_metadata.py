"""atheris harness for atomicplug.metadata: any bytes parse or raise MetadataError.

Run ``python fuzz/fuzz_metadata.py [--structured] [libFuzzer flags] [CORPUS_DIR]``.
A parsed value must also survive ``from_dict(m.to_dict()) == m``.
"""

from __future__ import annotations

import sys

from _common import pop_flag, require_atheris

atheris = require_atheris()

with atheris.instrument_imports():
    from atomicplug.errors import MetadataError
    from atomicplug.metadata import Metadata


def check_bytes(data: bytes) -> None:
    try:
        meta = Metadata.from_json_bytes(data)
    except MetadataError:
        return
    if Metadata.from_dict(meta.to_dict()) != meta:
        raise AssertionError("to_dict/from_dict does not round-trip")


def main() -> None:
    if pop_flag("--structured"):
        from hypothesis import HealthCheck, given, settings
        from strategies import metadata_bytes

        @settings(database=None, suppress_health_check=list(HealthCheck), deadline=None)
        @given(metadata_bytes())
        def structured(data: bytes) -> None:
            check_bytes(data)

        atheris.Setup(sys.argv, structured.hypothesis.fuzz_one_input)
    else:
        atheris.Setup(sys.argv, check_bytes)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
