"""ai_chatbot hooks, run inside atomicplug's database transaction (self-contained: no relative imports)."""

from sqlalchemy import text

TITLE_CHARS = 60


def title_for(first_message: str) -> str:
    """A session title from its first user message: one line, at most TITLE_CHARS characters."""
    line = " ".join(first_message.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


def upgrade(conn, ctx, from_version):
    """1.0.0 → 1.1.0: give every existing session a title from its first user message."""
    rows = conn.execute(
        text(
            "SELECT s.id, m.content FROM chat_sessions s JOIN chat_messages m ON m.session_id = s.id "
            "WHERE s.title IS NULL AND m.role = 'user' ORDER BY s.id, m.created_at"
        )
    ).all()
    titles = {}
    for session_id, content in rows:
        titles.setdefault(session_id, title_for(content))
    for session_id, title in titles.items():
        conn.execute(text("UPDATE chat_sessions SET title = :title WHERE id = :id"), {"title": title, "id": session_id})
