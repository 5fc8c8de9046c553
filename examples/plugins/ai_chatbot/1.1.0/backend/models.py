"""ChatSession and ChatMessage as SQLAlchemy Core tables (the migrations own the schema)."""

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

ChatSession = Table(
    "chat_sessions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(64)),
    Column("title", String(200)),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

ChatMessage = Table(
    "chat_messages",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("session_id", String(36), ForeignKey("chat_sessions.id"), nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("engine", String(32)),
    Column("rating", Integer),
    Column("created_at", DateTime, nullable=False),
)
