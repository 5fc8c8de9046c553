"""Campaign and Subscriber as SQLAlchemy Core tables (the migrations own the schema)."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text

metadata = MetaData()

Campaign = Table(
    "email_campaigns",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("subject", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("sent_at", DateTime),
)

Subscriber = Table(
    "email_subscribers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("email", String(320), nullable=False, unique=True),
    Column("subscribed_at", DateTime, nullable=False),
)
