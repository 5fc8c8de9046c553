"""One error root for everything atomicplug refuses or fails at.

Each class carries the process exit code of DESIGN.md "Interfaces":
0 ok; 1 failed and rolled back; 2 usage or config; 3 security refusal; 75 lock busy
or a COMMIT whose outcome the database has not decided yet (try again later).
The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``.
"""

from __future__ import annotations

__all__ = [
    "AtomicplugError",
    "OperationError",
    "UsageError",
    "ConfigError",
    "SecurityError",
    "PackageError",
    "MetadataError",
    "SignatureError",
    "PermissionRefusedError",
    "LockBusyError",
    "CommitInDoubtError",
    "JournalCorruptError",
    "MigrationError",
    "DatabaseError",
    "DependencyError",
    "DownloadError",
    "TrustError",
    "NotInstalledError",
]


class AtomicplugError(Exception):
    """Root of every expected failure; never shown with a traceback."""

    exit_code: int = 1


class OperationError(AtomicplugError):
    """The operation failed and nothing was changed (exit 1)."""

    exit_code = 1


class UsageError(AtomicplugError):
    """The command line or API call was wrong (exit 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """The configuration file is missing or invalid (exit 2)."""


class SecurityError(AtomicplugError):
    """Input refused for safety: bad package, signature or permission (exit 3)."""

    exit_code = 3


class PackageError(SecurityError):
    """A plugin zip is malformed or hostile."""


class MetadataError(PackageError):
    """metadata.json breaks a rule; the message names the field and the rule.

    ``problems`` lists every rule broken (the message shows the first).
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems or [message])


class SignatureError(SecurityError):
    """A signature or key is missing, malformed or does not verify."""


class TrustError(SecurityError):
    """Repository metadata is not trustworthy (rollback, freeze, mix-and-match)."""


class PermissionRefusedError(SecurityError):
    """The plugin asks for a permission the operator did not grant."""


class LockBusyError(AtomicplugError):
    """Another atomicplug process holds the lock (exit 75, EX_TEMPFAIL)."""

    exit_code = 75


class CommitInDoubtError(AtomicplugError):
    """The database has not yet decided a COMMIT atomicplug sent (exit 75, EX_TEMPFAIL).

    Nothing is guessed: the transaction stays pending and ``atomicplug recover``
    finishes it, forward or back, once the database has decided.
    """

    exit_code = 75


class JournalCorruptError(AtomicplugError):
    """A journal file is damaged other than by a torn last record."""

    exit_code = 1


class NotInstalledError(OperationError):
    """The named plugin (or version) is not installed."""


class MigrationError(OperationError):
    """A migration or install hook failed; the database transaction was rolled back."""


class DatabaseError(OperationError):
    """The database could not be reached or used."""


class DependencyError(OperationError):
    """Plugin or Python dependencies cannot be satisfied."""


class DownloadError(OperationError):
    """A package or manifest could not be fetched."""
