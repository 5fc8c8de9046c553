"""/api/v1/email/*: campaigns and subscribers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .db import get_engine
from .ids import insert_with_next_id
from .models import Campaign, Subscriber

router = APIRouter(prefix="/api/v1/email", tags=["email"])


class CampaignIn(BaseModel):
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=100_000)


class SubscriberIn(BaseModel):
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _campaign(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "subject": row["subject"], "body": row["body"], "sent_at": _iso(row["sent_at"])}


def _subscriber(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "email": row["email"], "subscribed_at": _iso(row["subscribed_at"])}


@router.get("/campaigns")
def list_campaigns() -> list[dict[str, Any]]:
    with get_engine().connect() as conn:
        return [_campaign(r) for r in conn.execute(select(Campaign).order_by(Campaign.c.id)).mappings()]


@router.post("/campaigns", status_code=201)
def create_campaign(body: CampaignIn) -> dict[str, Any]:
    values = {"subject": body.subject, "body": body.body, "sent_at": None}
    new_id = insert_with_next_id(get_engine(), Campaign, values)
    return _campaign({"id": new_id, **values})


@router.get("/subscribers")
def list_subscribers() -> list[dict[str, Any]]:
    with get_engine().connect() as conn:
        return [_subscriber(r) for r in conn.execute(select(Subscriber).order_by(Subscriber.c.id)).mappings()]


@router.post("/subscribers", status_code=201)
def add_subscriber(body: SubscriberIn) -> dict[str, Any]:
    email = body.email.strip().lower()
    engine = get_engine()

    def exists() -> bool:
        with engine.connect() as conn:
            return conn.scalar(select(Subscriber.c.id).where(Subscriber.c.email == email)) is not None

    if exists():
        raise HTTPException(status_code=409, detail=f"{email} is already subscribed")
    values = {"email": email, "subscribed_at": _now()}
    try:
        new_id = insert_with_next_id(engine, Subscriber, values)
    except IntegrityError:
        if exists():  # subscribed concurrently
            raise HTTPException(status_code=409, detail=f"{email} is already subscribed") from None
        raise
    return _subscriber({"id": new_id, **values})
