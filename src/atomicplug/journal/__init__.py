"""Write-ahead journal: one checksummed JSON-lines file per transaction.

docs/design.md "State": ``<home>/journal/<txid>.jsonl``. Records are ``begin``
(with the plan), ``staged``, ``committed``, ``done`` and ``aborted``; each
append is fsync'd before the step it announces happens.
"""

from atomicplug.journal.reader import JournalState, pending_journals, read_journal
from atomicplug.journal.records import RecordType
from atomicplug.journal.writer import Journal

__all__ = ["Journal", "JournalState", "RecordType", "read_journal", "pending_journals"]
