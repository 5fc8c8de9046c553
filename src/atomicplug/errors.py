"""One error root for everything atomicplug refuses or fails at.

Each class carries the process exit code of docs/design.md "Interfaces":
0 ok; 1 failed and rolled back; 2 usage or config; 3 security refusal; 75 lock busy
or a COMMIT whose outcome the database has not decided yet (try again later).
The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``.

For other front ends (a web page, an API) each class also has a short human
``title``, and an error may carry structured fields: ``option``, the name of
the option that would resolve it (``"cascade"``, ``"allow_downgrade"``: the
Python API's keyword, the CLI's ``--cascade``), and ``plugins``, the plugin
ids it concerns (for a dependency refusal: the dependents). The message text
stays the CLI's.
"""

from __future__ import annotations

__all__ = [
    "report_interrupt",
    "AtomicplugError",
    "OperationError",
    "UsageError",
    "ConfigError",
    "SecurityError",
    "PackageError",
    "MetadataError",
    "SettingsError",
    "SignatureError",
    "PermissionRefusedError",
    "LockBusyError",
    "CommitInDoubtError",
    "JournalCorruptError",
    "MigrationError",
    "DatabaseError",
    "StorageError",
    "DependencyError",
    "DownloadError",
    "RepositoryUnreachableError",
    "TrustError",
    "NotInstalledError",
]


def report_interrupt() -> int:
    """Ctrl-C, as every command line path says it: one line on stderr, exit code 130 (128 + SIGINT)."""
    import sys

    print("atomicplug: interrupted", file=sys.stderr)
    return 130


class AtomicplugError(Exception):
    """Root of every expected failure; never shown with a traceback."""

    exit_code: int = 1
    title: str = "Operation failed"

    def __init__(self, *args: object, option: str | None = None, plugins: tuple[str, ...] = ()) -> None:
        super().__init__(*args)
        self.option = option
        self.plugins = tuple(plugins)


class OperationError(AtomicplugError):
    """The operation failed and nothing was changed (exit 1)."""

    exit_code = 1
    title = "Operation failed"


class UsageError(AtomicplugError):
    """The command line or API call was wrong (exit 2)."""

    exit_code = 2
    title = "Request not possible"


class ConfigError(UsageError):
    """The configuration file is missing or invalid (exit 2)."""

    title = "Configuration problem"


class SecurityError(AtomicplugError):
    """Input refused for safety: bad package, signature or permission (exit 3)."""

    exit_code = 3
    title = "Refused for security"


class PackageError(SecurityError):
    """A plugin zip is malformed or hostile."""

    title = "Package refused"


class MetadataError(PackageError):
    """metadata.json breaks a rule; the message names the field and the rule.

    ``problems`` lists every rule broken (the message shows the first).
    """

    title = "Invalid plugin metadata"

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems or [message])


class SettingsError(UsageError):
    """Plugin settings do not match the plugin's settings schema (exit 2).

    ``problems`` lists one line per field (the message shows the first);
    ``fields`` names those fields, ``plugins`` the plugin; ``missing`` the
    required ones that have no value (the caller may say how to give them).
    """

    title = "Settings not valid"

    def __init__(
        self, message: str, problems: list[str] | None = None, *, plugins: tuple[str, ...] = (), fields: tuple[str, ...] = (),
        missing: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, plugins=plugins)
        self.problems: list[str] = list(problems or [message])
        self.fields = tuple(fields)
        self.missing = tuple(missing)


class SignatureError(SecurityError):
    """A signature or key is missing, malformed or does not verify."""

    title = "Signature not valid"


class TrustError(SecurityError):
    """Repository metadata is not trustworthy (rollback, freeze, mix-and-match)."""

    title = "Repository data not trusted"


class PermissionRefusedError(SecurityError):
    """The plugin asks for a permission the operator did not grant."""

    title = "Permission not granted"


class LockBusyError(AtomicplugError):
    """Another atomicplug process holds the lock (exit 75, EX_TEMPFAIL)."""

    exit_code = 75
    title = "Another operation is running"


class CommitInDoubtError(AtomicplugError):
    """The database has not yet decided a COMMIT atomicplug sent (exit 75, EX_TEMPFAIL).

    Nothing is guessed: the transaction stays pending and ``atomicplug recover``
    finishes it, forward or back, once the database has decided.
    """

    exit_code = 75


class JournalCorruptError(AtomicplugError):
    """A journal file is damaged other than by a torn last record."""

    exit_code = 1
    title = "Operation journal damaged"


class NotInstalledError(OperationError):
    """The named plugin (or version) is not installed."""

    title = "Plugin not installed"


class MigrationError(OperationError):
    """A migration or install hook failed; the database transaction was rolled back."""

    title = "Database change failed"


class DatabaseError(OperationError):
    """The database could not be reached or used."""

    title = "Database unavailable"


class StorageError(OperationError):
    """The disk or the database's storage failed under an operation (ENOSPC, EIO, a full database).

    The message says what could not be done, where (the path, or the database),
    and the state left behind: nothing changed, or what ``atomicplug recover``
    will finish (docs/design.md "A failing disk is one line"). ``path`` and
    ``errno`` (when the system gave one) are there for other front ends.
    """

    title = "Storage failed"

    def __init__(self, message: str, *, path: str | None = None, errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno


class DependencyError(OperationError):
    """Plugin or Python dependencies cannot be satisfied."""

    title = "Plugin dependencies not met"


class DownloadError(OperationError):
    """A package or manifest could not be fetched."""

    title = "Download failed"


class RepositoryUnreachableError(DownloadError):
    """No attempt reached the repository at all (refused, reset, timed out before any answer)."""

    title = "Repository unreachable"
