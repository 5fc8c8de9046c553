"""Cluster mode: a fleet of app servers on one PostgreSQL converges to the same plugins.

docs/design.md "Beyond one machine". PostgreSQL is the coordinator, with what
it already has: the desired state lives in tables written in the same
transaction as the migrations (so they run once for the cluster), writers on
any node take turns on ``pg_advisory_xact_lock``, nodes hear of changes by
``LISTEN atomicplug`` and ask ``txid_status`` whether an announced generation
committed. Each node stages and switches its own files through the ordinary
journal and recovery, verifying every package against its own trusted keys.

Modules: :mod:`~atomicplug.cluster.tables` (schema and connections),
:mod:`~atomicplug.cluster.desired` (the desired state as frozen values),
:mod:`~atomicplug.cluster.packages` (package store), :mod:`~atomicplug.cluster.nodes`
(node rows, liveness, status), :mod:`~atomicplug.cluster.sync` (a node converges),
:mod:`~atomicplug.cluster.writer` (a writer's turn), :mod:`~atomicplug.cluster.watch`
(LISTEN loop).
"""

from __future__ import annotations

__all__ = ["CHANNEL"]

#: The NOTIFY channel of every cluster event (the contract's name).
CHANNEL = "atomicplug"
