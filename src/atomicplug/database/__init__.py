"""The database side of stage 4 (docs/design.md "One transaction" step 4, "Migrations").

One small module per job, used by :mod:`atomicplug.stages.migrate`:

- :mod:`.engine`     DB-API connections with transactional DDL (SQLite recipe, PG advisory lock)
- :mod:`.scripts`    splitting SQL scripts; refusing statements that cannot run in a transaction
- :mod:`.discovery`  finding the migrations of a store tree, with checksums
- :mod:`.ledger`     the ``atomicplug_migrations`` / ``atomicplug_transactions`` tables
- :mod:`.plan`       which ups and downs one plugin change runs
- :mod:`.hooks`      ``backend/install.py`` hooks (given a SQLAlchemy Connection over the same transaction)
- :mod:`.schema`     schema snapshots for the reversibility rehearsal

Only :mod:`.hooks` imports SQLAlchemy, and only when a plugin has a hook to run (issue 8:
the import alone cost a third of installing a 10 MB plugin).
"""
