"""/api/v1/sms/*: contacts (email_marketing's subscribers with a phone), send (queues), messages."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import select, update

from .db import get_engine
from .models import EmailSubscriber, SmsContact, SmsMessage

router = APIRouter(prefix="/api/v1/sms", tags=["sms"])

MAX_BODY = 1600  # ten concatenated segments
_PHONE = re.compile(r"\+?[0-9]{6,20}")


def normalize_phone(raw: str) -> str:
    """'+49 (30) 123-456' -> '+4930123456'; ValueError when it is not a phone number."""
    phone = re.sub(r"[\s().-]", "", raw)
    if not _PHONE.fullmatch(phone):
        raise ValueError(f"not a phone number: {raw!r}")
    return phone


class ContactIn(BaseModel):
    phone: str = Field(min_length=6, max_length=32)


class SendIn(BaseModel):
    body: str = Field(min_length=1, max_length=MAX_BODY)
    to: str | None = Field(default=None, max_length=32)
    subscriber_id: int | None = None

    @model_validator(mode="after")
    def _one_recipient(self) -> SendIn:
        if (self.to is None) == (self.subscriber_id is None):
            raise ValueError("give exactly one of 'to' (a phone number) or 'subscriber_id'")
        return self


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _message(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "subscriber_id": row["subscriber_id"],
        "to": row["to_number"],
        "body": row["body"],
        "status": row["status"],
        "created_at": _iso(row["created_at"]),
        "sent_at": _iso(row["sent_at"]),
    }


def _phone_or_422(raw: str) -> str:
    try:
        return normalize_phone(raw)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None


@router.get("/contacts")
def list_contacts() -> list[dict[str, Any]]:
    """Every email_marketing subscriber, with the phone number if one was given."""
    query = (
        select(EmailSubscriber.c.id, EmailSubscriber.c.email, SmsContact.c.phone)
        .select_from(EmailSubscriber.outerjoin(SmsContact, SmsContact.c.subscriber_id == EmailSubscriber.c.id))
        .order_by(EmailSubscriber.c.id)
    )
    with get_engine().connect() as conn:
        return [{"subscriber_id": r["id"], "email": r["email"], "phone": r["phone"]} for r in conn.execute(query).mappings()]


@router.put("/contacts/{subscriber_id}")
def set_phone(subscriber_id: int, body: ContactIn) -> dict[str, Any]:
    phone = _phone_or_422(body.phone)
    with get_engine().begin() as conn:
        email = conn.scalar(select(EmailSubscriber.c.email).where(EmailSubscriber.c.id == subscriber_id))
        if email is None:
            raise HTTPException(status_code=404, detail=f"subscriber {subscriber_id} not found (add it in email_marketing)")
        changed = conn.execute(
            update(SmsContact).where(SmsContact.c.subscriber_id == subscriber_id).values(phone=phone, updated_at=_now())
        ).rowcount
        if not changed:
            conn.execute(SmsContact.insert().values(subscriber_id=subscriber_id, phone=phone, updated_at=_now()))
    return {"subscriber_id": subscriber_id, "email": email, "phone": phone}


@router.post("/send", status_code=202)
def send(body: SendIn) -> dict[str, Any]:
    """Queue a message; a delivery worker (not part of this example) sends queued messages."""
    engine = get_engine()
    if body.subscriber_id is not None:
        with engine.connect() as conn:
            row = conn.execute(
                select(EmailSubscriber.c.id, SmsContact.c.phone)
                .select_from(EmailSubscriber.outerjoin(SmsContact, SmsContact.c.subscriber_id == EmailSubscriber.c.id))
                .where(EmailSubscriber.c.id == body.subscriber_id)
            ).first()
        if row is None:
            raise HTTPException(status_code=404, detail=f"subscriber {body.subscriber_id} not found")
        if row.phone is None:
            raise HTTPException(status_code=422, detail=f"subscriber {body.subscriber_id} has no phone number")
        to_number = row.phone
    else:
        to_number = _phone_or_422(body.to or "")
    values = {
        "id": str(uuid.uuid4()),
        "subscriber_id": body.subscriber_id,
        "to_number": to_number,
        "body": body.body,
        "status": "queued",
        "created_at": _now(),
        "sent_at": None,
    }
    with engine.begin() as conn:
        conn.execute(SmsMessage.insert().values(**values))
    return _message(values)


@router.get("/messages")
def list_messages(status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    query = select(SmsMessage).order_by(SmsMessage.c.created_at.desc()).limit(max(1, min(limit, 500)))
    if status is not None:
        query = query.where(SmsMessage.c.status == status)
    with get_engine().connect() as conn:
        return [_message(r) for r in conn.execute(query).mappings()]
