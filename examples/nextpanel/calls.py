"""Each marketplace operation as one Installer call: which writer, with which arguments.

The operation runs the call (:meth:`Call.run`) and the preview dialog previews
the very same call (:meth:`Call.preview`, the library's dry run), so what the
admin confirms is what then runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from atomicplug.installer import Installer, TransactionResult
from atomicplug.preview import Preview

__all__ = ["Call", "install_call", "rollback_call"]


@attrs.frozen
class Call:
    """``Installer.<writer>(*args, **options)``."""

    writer: str
    args: tuple[Any, ...] = ()
    options: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    def run(self, installer: Installer) -> TransactionResult:
        return getattr(installer, self.writer)(*self.args, **self.options)  # type: ignore[no-any-return]

    def preview(self, installer: Installer) -> Preview:
        return installer.preview(self.writer, *self.args, **self.options)

    def by(self, who: str) -> Call:
        """The same call naming who asked (installs and settings changes record it)."""
        if self.writer not in ("install", "configure", "rollback"):
            return self
        return attrs.evolve(self, options={**self.options, "by": who})


def install_call(
    addon_id: str, version: str | None, installed: str | None, *, allow_downgrade: bool = False,
    settings: Mapping[str, Any] | None = None,
) -> Call:
    """The newest version (an installed plugin: upgraded), or ``version`` (older: with ``allow_downgrade``)."""
    options = _given(addon_id, settings)
    if version is not None:
        return Call("install", (f"{addon_id}=={version}",), {**options, "allow_downgrade": allow_downgrade})
    return Call("install", (addon_id,), {**options, "upgrade": installed is not None})


def rollback_call(addon_id: str, settings: Mapping[str, Any] | None = None) -> Call:
    """Back to the version ``addon_id`` replaced, with ``settings`` that version requires and no longer has."""
    return Call("rollback", (addon_id,), _given(addon_id, settings))


def _given(addon_id: str, settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Installer's ``settings=`` option for one plugin's values (none: no option)."""
    return {"settings": {addon_id: dict(settings)}} if settings else {}
