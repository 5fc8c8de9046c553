"""sms_notifications hooks, run inside atomicplug's database transaction (self-contained)."""

from sqlalchemy import text


def upgrade(conn, ctx, from_version):
    """1.0.x -> 1.1.0: count the segments of the messages queued before (160 chars in one, 153 per part beyond)."""
    conn.execute(text("UPDATE sms_messages SET segments = (LENGTH(body) + 152) / 153 WHERE LENGTH(body) > 160"))
