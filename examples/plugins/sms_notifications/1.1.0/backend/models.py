"""SQLAlchemy Core tables (the migrations own the schema).

``EmailSubscriber`` is email_marketing's table, read-only here: this plugin
requires email_marketing and treats its subscribers as the SMS contacts. It is
read through the table, not by importing ``addons.email_marketing``, so this
backend imports on its own (and a disabled email_marketing backend does not
break it).
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

EmailSubscriber = Table(
    "email_subscribers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("email", String(320), nullable=False),
    Column("subscribed_at", DateTime, nullable=False),
)

SmsContact = Table(
    "sms_contacts",
    metadata,
    Column("subscriber_id", Integer, ForeignKey("email_subscribers.id"), primary_key=True, autoincrement=False),
    Column("phone", String(32), nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

SmsMessage = Table(
    "sms_messages",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("subscriber_id", Integer),
    Column("to_number", String(32), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("segments", Integer, nullable=False, server_default="1"),
    Column("created_at", DateTime, nullable=False),
    Column("sent_at", DateTime),
)
