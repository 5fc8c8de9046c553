"""Rules on entry names and modes (docs/design.md "Safe extraction").

Why: a name is the only thing deciding where bytes land, so every name is
checked as text before anything is written: no escape (``..``, absolute,
backslash, drive), nothing a file system would fold onto another name, and
only the top-level layout of the package format.
"""

from __future__ import annotations

import importlib.util
import posixpath
import re
import stat
import unicodedata

from atomicplug.config import ExtractLimits
from atomicplug.errors import PackageError
from atomicplug.layout import is_backend_source

__all__ = [
    "METADATA_NAME",
    "TOP_LEVEL_DIRS",
    "TOP_LEVEL_DOC_PREFIXES",
    "refuse",
    "show",
    "escaped",
    "decode_name",
    "check_mode",
    "check_name",
    "name_problem",
    "collision_key",
]

from atomicplug.layout import ALLOWED_TOP_LEVEL, METADATA_NAME, TOP_LEVEL_DIRS, TOP_LEVEL_DOC_PREFIXES, top_level_allowed

_CONTROL = re.compile(r"[\x01-\x1f\x7f-\x9f]")
_DRIVE = re.compile(r"[A-Za-z]:")


def show(name: str) -> str:
    """A name quoted for a one-line message, control characters escaped."""
    text = repr(name)
    return text if len(text) <= 120 else text[:117] + "...'"


def escaped(name: str) -> str:
    """A name for a message without quotes (``pack``'s): control characters and NUL escaped, as
    :func:`name_problem` finds them, else the name as it is."""
    return name.encode("unicode_escape").decode("ascii") if "\x00" in name or _CONTROL.search(name) else name


def refuse(name: str, rule: str) -> PackageError:
    """The one-line refusal every rule uses: ``package entry 'x' <rule>``."""
    return PackageError(f"package entry {show(name)} {rule}")


def decode_name(raw: bytes, utf8_flag: bool) -> str:
    """Decode an entry name; names without the UTF-8 flag are tried as UTF-8 too.

    Many zip tools store UTF-8 names without setting flag bit 11; anything that
    is not UTF-8 is refused rather than guessed (cp437 would silently rename).
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        shown = raw.decode("utf-8", "backslashreplace")
        hint = "" if utf8_flag else " (and no other encoding is accepted)"
        raise refuse(shown, f"has a name that is not valid UTF-8{hint}") from None


def check_mode(name: str, external_attr: int) -> None:
    """Refuse symlinks, devices, fifos, sockets and setuid/setgid/sticky bits."""
    mode = (external_attr >> 16) & 0xFFFF
    if not mode:
        return
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        raise refuse(name, "is a symlink (symlinks are not allowed)")
    if kind in (stat.S_IFCHR, stat.S_IFBLK):
        raise refuse(name, "is a device file")
    if kind == stat.S_IFIFO:
        raise refuse(name, "is a fifo")
    if kind == stat.S_IFSOCK:
        raise refuse(name, "is a socket")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise refuse(name, f"has an unknown file type (mode {mode:o})")
    if mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX):
        raise refuse(name, f"has setuid, setgid or sticky bits (mode {mode:o})")
    if kind == stat.S_IFDIR and not name.endswith("/"):
        raise refuse(name, "is marked as a folder but its name does not end in '/'")


def check_name(name: str, limits: ExtractLimits) -> tuple[tuple[str, ...], bool]:
    """Validate one entry name; return its components and whether it is a folder."""
    problem = name_problem(name, limits)
    if problem is not None:
        raise refuse(name, problem)
    is_dir = name.endswith("/")
    parts = tuple((name[:-1] if is_dir else name).split("/"))
    _check_top_level(name, parts, is_dir)
    return parts, is_dir


def name_problem(name: str, limits: ExtractLimits) -> str | None:
    """What is wrong with an entry name as text (its top-level layout aside), or None.

    The installer's rules, which ``pack`` applies too: a zip it makes is never refused for a name.
    """
    if "\x00" in name:
        return "has a NUL byte in its name"
    if _CONTROL.search(name):
        return "has a control character in its name"
    if "\\" in name:
        return "has a backslash in its name (only '/' separates folders)"
    if name.startswith("/"):
        return "is an absolute path"
    if _DRIVE.match(name):
        return "starts with a drive letter"
    if not name:
        return "has an empty name"
    for part in (name[:-1] if name.endswith("/") else name).split("/"):
        if part == "..":
            return "escapes the package folder ('..' component)"
        if part in ("", "."):
            return "has an empty or '.' path component"
        if len(part.encode("utf-8")) > limits.max_name_bytes:
            return f"has a name component longer than {limits.max_name_bytes} bytes"
    if len(name.encode("utf-8")) > limits.max_path_bytes:
        return f"has a path longer than {limits.max_path_bytes} bytes"
    if is_backend_source(name):
        # Staging stores the module's pyc beside it (atomicplug.pycs), a longer name than the source's.
        compiled = posixpath.basename(importlib.util.cache_from_source(name, optimization=""))
        if len(compiled.encode("utf-8")) > limits.max_name_bytes:
            return f"is a backend module whose name leaves no room for its compiled file's name ({limits.max_name_bytes} bytes at most)"
    return None


def _check_top_level(name: str, parts: tuple[str, ...], is_dir: bool) -> None:
    """Only the package format's layout is allowed at the top."""
    top = parts[0]
    if top in TOP_LEVEL_DIRS:
        if len(parts) == 1 and not is_dir:
            raise refuse(name, f"must be a folder ('{top}/'), not a file")
        return
    if len(parts) == 1 and top_level_allowed(top, is_dir):
        return
    raise refuse(name, f"is not allowed at the top level (allowed: {ALLOWED_TOP_LEVEL})")


def collision_key(parts: tuple[str, ...]) -> str:
    """The name as a case-insensitive, normalising file system would see it."""
    text = "/".join(parts)
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())
