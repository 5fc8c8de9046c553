"""/api/v1/chat/*: sessions, messages (the user's and the engine's reply), ratings, health."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy import select, update

from .db import get_engine
from .engine import openai_key, reply_to, select_engine
from .models import ChatMessage, ChatSession

router = APIRouter(prefix="/api/v1/chat", tags=["chat"])


class SessionIn(BaseModel):
    user_id: str | None = Field(default=None, max_length=64)


class MessageIn(BaseModel):
    content: str = Field(min_length=1, max_length=4000)


class RatingIn(BaseModel):
    rating: int = Field(ge=1, le=5)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # naive UTC: TIMESTAMP on both databases


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def _session_row(conn: Any, session_id: str) -> Any:
    row = conn.execute(select(ChatSession).where(ChatSession.c.id == session_id)).mappings().first()
    if row is None:
        raise HTTPException(status_code=404, detail=f"chat session {session_id} not found")
    return row


def _message(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "session_id": row["session_id"],
        "role": row["role"],
        "content": row["content"],
        "engine": row["engine"],
        "rating": row.get("rating"),
        "created_at": _iso(row["created_at"]),
    }


def _session(row: Any, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "user_id": row["user_id"],
        "title": row.get("title"),
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "messages": messages,
    }


@router.get("/health")
def health() -> dict[str, Any]:
    from . import VERSION

    return {
        "status": "ok", "plugin": "ai_chatbot", "version": VERSION, "engine": select_engine().name,
        "openai_key_set": bool(openai_key()),  # whether, never which
    }


@router.post("/sessions", status_code=201)
def create_session(body: SessionIn | None = None) -> dict[str, Any]:
    now = _now()
    values = {"id": str(uuid.uuid4()), "user_id": body.user_id if body else None, "created_at": now, "updated_at": now}
    with get_engine().begin() as conn:
        conn.execute(ChatSession.insert().values(**values))
    return _session(values, [])


@router.get("/sessions")
def list_sessions(user_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    query = select(ChatSession).order_by(ChatSession.c.updated_at.desc()).limit(max(1, min(limit, 200)))
    if user_id is not None:
        query = query.where(ChatSession.c.user_id == user_id)
    with get_engine().connect() as conn:
        return [_session(row, []) for row in conn.execute(query).mappings()]


@router.get("/sessions/{session_id}")
def get_session(session_id: str) -> dict[str, Any]:
    with get_engine().connect() as conn:
        row = _session_row(conn, session_id)
        rows = conn.execute(
            select(ChatMessage).where(ChatMessage.c.session_id == session_id).order_by(ChatMessage.c.created_at, ChatMessage.c.role.desc())
        ).mappings()
        return _session(row, [_message(m) for m in rows])


@router.post("/sessions/{session_id}/messages", status_code=201)
def send_message(session_id: str, body: MessageIn) -> dict[str, Any]:
    engine = get_engine()
    with engine.connect() as conn:
        _session_row(conn, session_id)
        history = [
            (m["role"], m["content"])
            for m in conn.execute(
                select(ChatMessage.c.role, ChatMessage.c.content)
                .where(ChatMessage.c.session_id == session_id)
                .order_by(ChatMessage.c.created_at)
            ).mappings()
        ]
    reply = reply_to(body.content, history)  # outside any transaction: OpenAI may take seconds
    asked = _now()
    user_message = {
        "id": str(uuid.uuid4()), "session_id": session_id, "role": "user",
        "content": body.content, "engine": None, "rating": None, "created_at": asked,
    }  # fmt: skip
    answer = {
        "id": str(uuid.uuid4()), "session_id": session_id, "role": "assistant",
        "content": reply.content, "engine": reply.engine, "rating": None, "created_at": _now(),
    }  # fmt: skip
    with engine.begin() as conn:
        session = _session_row(conn, session_id)
        conn.execute(ChatMessage.insert(), [user_message, answer])
        changes: dict[str, Any] = {"updated_at": answer["created_at"]}
        if session["title"] is None:
            changes["title"] = _title(body.content)
        conn.execute(update(ChatSession).where(ChatSession.c.id == session_id).values(**changes))
    return {"user_message": _message(user_message), "reply": _message(answer)}


@router.post("/sessions/{session_id}/messages/{message_id}/rating")
def rate_message(session_id: str, message_id: str, body: RatingIn) -> dict[str, Any]:
    """Rate one of the assistant's replies from 1 (useless) to 5 (solved it)."""
    where = (ChatMessage.c.id == message_id) & (ChatMessage.c.session_id == session_id)
    with get_engine().begin() as conn:
        row = conn.execute(select(ChatMessage).where(where)).mappings().first()
        if row is None:
            raise HTTPException(status_code=404, detail=f"message {message_id} not found in session {session_id}")
        if row["role"] != "assistant":
            raise HTTPException(status_code=422, detail="only the assistant's replies can be rated")
        conn.execute(update(ChatMessage).where(where).values(rating=body.rating))
        return _message({**row, "rating": body.rating})


def _title(first_message: str, limit: int = 60) -> str:
    line = " ".join(first_message.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
