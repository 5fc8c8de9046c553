"""Packages every node can fetch: in PostgreSQL by sha256, or from the signed repository.

docs/design.md "Beyond one machine". A writer publishes the verified bytes
(and ``.minisig``) of each package its generation needs into
``atomicplug_cluster_packages`` in 1 MiB chunks, unless the configured
repository already offers that exact package. A node takes each package in
through the ordinary intake (:mod:`atomicplug.intake`): its bytes must hash to
the sha256 the desired state names and its signature must verify against the
node's *own* trusted keys, so write access to the database is not enough to
run code on a node. Chunks are read one query each, so a node never holds a
whole package in memory. :func:`collect` (``atomicplug gc`` on a cluster node)
removes the packages no kept generation of the cluster names.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from atomicplug.cluster import tables
from atomicplug.errors import OperationError, TrustError

if TYPE_CHECKING:
    from atomicplug.cluster.desired import DesiredPlugin
    from atomicplug.config import Config
    from atomicplug.database.engine import Database
    from atomicplug.intake import Package

__all__ = ["CHUNK_BYTES", "stored", "publish", "obtain", "collect"]

CHUNK_BYTES = 1 << 20


def stored(db: Database, sha256s: list[str]) -> set[str]:
    """Which of ``sha256s`` the database holds."""
    if not sha256s:
        return set()
    marks = ", ".join("?" for _ in sha256s)
    rows = db.execute(f"SELECT sha256 FROM {db.qualified(tables.PACKAGES)} WHERE sha256 IN ({marks})", list(sha256s))
    return {str(row[0]) for row in rows}


def _in_repository(config: Config, plugin: DesiredPlugin) -> bool:
    """Does the configured repository offer exactly this package (same sha256)? Unreachable: no."""
    if not config.repository:
        return False
    from atomicplug.errors import AtomicplugError
    from atomicplug.repository.manifest_cache import cached_manifest

    try:
        entry = cached_manifest(config).find(plugin.plugin_id, plugin.version)
    except AtomicplugError:
        return False
    return entry is not None and entry.sha256 == plugin.sha256


def publish(config: Config, db: Database, plugins: list[DesiredPlugin], progress: Callable[[str], None]) -> None:
    """Store the packages of ``plugins`` that neither the database nor the repository has.

    ``db`` is an autocommit connection: each package is committed on its own,
    before the generation that needs it is announced. Raises OperationError,
    naming every one and before any is stored, when packages are not in this
    node's ``downloads/`` either: a machine running alone keeps a package's
    files, not its zip, so one that joins a cluster must be given its zips again.
    """
    from atomicplug.intake import blob_path, signature_path_for

    have = stored(db, [p.sha256 for p in plugins])
    needed = [p for p in plugins if p.sha256 not in have and not _in_repository(config, p)]
    missing = [p for p in needed if not blob_path(config, p.sha256).is_file()]
    if missing:
        names = ", ".join(f"{p.plugin_id} {p.version}" for p in missing)
        raise OperationError(
            f"cannot publish {names} to the cluster: {'its package is' if len(missing) == 1 else 'their packages are'} not in "
            f"the cluster's package store, the repository or {config.downloads_dir} (a machine running alone "
            "keeps the installed files, not the zip); give this machine the zip again (`atomicplug install A.zip B.zip` "
            "takes zips in and keeps the installed versions as they are), then try again"
        )
    for plugin in needed:
        if plugin.sha256 in have:  # the same package listed twice
            continue
        blob = blob_path(config, plugin.sha256)
        signature = signature_path_for(blob)
        progress(f"publishing {plugin.plugin_id} {plugin.version} to the cluster's package store")
        _store(db, plugin, blob, signature.read_text(encoding="utf-8", errors="surrogateescape") if signature.is_file() else None)
        have.add(plugin.sha256)


def _store(db: Database, plugin: DesiredPlugin, blob: Path, signature: str | None) -> None:
    db.execute("BEGIN")
    try:
        inserted = db.execute(
            f"INSERT INTO {db.qualified(tables.PACKAGES)} (sha256, plugin_id, version, size, signature, stored_at) "
            "VALUES (?, ?, ?, ?, ?, pg_catalog.clock_timestamp()) ON CONFLICT (sha256) DO NOTHING RETURNING sha256",
            [plugin.sha256, plugin.plugin_id, plugin.version, blob.stat().st_size, signature],
        )
        if inserted:
            with open(blob, "rb") as handle:
                seq = 0
                while chunk := handle.read(CHUNK_BYTES):
                    db.execute(
                        f"INSERT INTO {db.qualified(tables.CHUNKS)} (sha256, seq, data) VALUES (?, ?, ?)",
                        [plugin.sha256, seq, _binary(chunk)],
                    )
                    seq += 1
        db.execute("COMMIT")
    except BaseException:
        db.rollback_quietly()
        raise


def _binary(data: bytes) -> object:
    import psycopg2

    return psycopg2.Binary(data)


def obtain(config: Config, db: Database, plugin: DesiredPlugin) -> Package:
    """The verified package of ``plugin``: this node's ``downloads/``, else the database, else the repository.

    Raises SignatureError / TrustError / PackageError when the bytes are not
    what this node trusts, OperationError when no source has them.
    """
    from atomicplug.intake import take_in_cached, take_in_download

    label = f"{plugin.plugin_id} {plugin.version}"
    package = take_in_cached(config, plugin.sha256)  # a zip given to this node, or one it took in before
    if package is not None:
        return package
    rows = db.execute(f"SELECT size, signature FROM {db.qualified(tables.PACKAGES)} WHERE sha256 = ?", [plugin.sha256])
    if rows:
        size, signature = int(rows[0][0]), rows[0][1]

        def fill(temp: Path) -> None:
            _read_chunks(db, plugin.sha256, size, temp)

        return take_in_download(config, fill, signature, sha256=plugin.sha256, name=label)
    if config.repository:
        return _from_repository(config, plugin)
    raise OperationError(
        f"{label} (package {plugin.sha256[:12]}) is not in the cluster's package store and no repository is configured"
    )


def _read_chunks(db: Database, sha256: str, size: int, temp: Path) -> None:
    written = 0
    with open(temp, "wb") as out:
        seq = 0
        while written < size:
            rows = db.execute(f"SELECT data FROM {db.qualified(tables.CHUNKS)} WHERE sha256 = ? AND seq = ?", [sha256, seq])
            if not rows:
                break
            data = bytes(rows[0][0])
            out.write(data)
            written += len(data)
            seq += 1
    if written != size:
        raise TrustError(f"package {sha256[:12]} in the cluster's package store has {written} bytes, expected {size}")


def _from_repository(config: Config, plugin: DesiredPlugin) -> Package:
    """By id and version from the signed repository; its sha256 must be the desired state's."""
    from atomicplug.repository.manifest_cache import load_manifest
    from atomicplug.repository.remote import fetch_package

    label = f"{plugin.plugin_id} {plugin.version}"
    entry = load_manifest(config).find(plugin.plugin_id, plugin.version)
    if entry is None:
        raise OperationError(f"{label} is neither in the cluster's package store nor in the repository's manifest")
    if entry.sha256 != plugin.sha256:
        raise TrustError(
            f"{label}: the repository's package has sha256 {entry.sha256[:12]}, the cluster's desired state says "
            f"{plugin.sha256[:12]}: refused"
        )
    return fetch_package(config, entry)  # its signature checked against this node's keys, its sha256 the manifest's


def collect(config: Config, grace_seconds: float, *, dry_run: bool = False) -> tuple[int, int]:
    """Remove the packages no kept generation of the cluster names: (how many, their bytes).
    ``dry_run``: only count them (``gc --dry-run``); the writers' turn is taken and given back.

    Kept: every package the desired state names (each plugin's current and
    previous one: a node syncs to the first, ``rollback ID`` brings back the
    second) and those of the last ``keep_generations`` committed generations (a
    writer's ``rollback --generation`` publishes only what the store lacks).
    Under the writers' turn, so no writer publishes meanwhile; a package stored
    less than ``grace_seconds`` ago stays (a node seeding the cluster publishes
    before it takes the turn). Nothing is removed before every kept generation
    has been read: a row that cannot be read refuses the whole collection.
    """
    from atomicplug.cluster.desired import DesiredState, read_desired
    from atomicplug.cluster.turns import take_turn

    with tables.database_errors(), tables.cluster_database(config) as db:
        try:
            take_turn(db, config.lock_timeout)
            desired = read_desired(db)
            if desired is None:  # no cluster state yet: whatever is stored belongs to a seed in progress
                db.rollback_quietly()
                return 0, 0
            kept = [desired]
            rows = db.execute(
                f"SELECT generation, txid, plugins FROM {db.qualified(tables.GENERATIONS)} WHERE state = 'committed' "
                "ORDER BY generation DESC LIMIT ?",
                [max(config.keep_generations, 1)],
            )
            kept += [DesiredState.from_json(int(generation), str(txid), str(plugins)) for generation, txid, plugins in rows]
            needed = {sha for state in kept for plugin in state.plugins.values() for sha in _named(plugin)}
            old = db.execute(
                f"SELECT sha256, size FROM {db.qualified(tables.PACKAGES)} "
                "WHERE stored_at < pg_catalog.clock_timestamp() - pg_catalog.make_interval(secs => ?)",
                [float(grace_seconds)],
            )
            doomed = [(str(sha), int(size)) for sha, size in old if str(sha) not in needed]
            if dry_run:
                db.rollback_quietly()  # gives the turn back, nothing deleted
            else:
                for sha, _size in doomed:  # its chunks go with it (ON DELETE CASCADE)
                    db.execute(f"DELETE FROM {db.qualified(tables.PACKAGES)} WHERE sha256 = ?", [sha])
                db.execute("COMMIT")
        except BaseException:
            db.rollback_quietly()
            raise
    return len(doomed), sum(size for _sha, size in doomed)


def _named(plugin: DesiredPlugin) -> tuple[str, ...]:
    """The packages one plugin of a generation needs: its own, and the one it replaced."""
    return (plugin.sha256, plugin.previous[1]) if plugin.previous else (plugin.sha256,)
