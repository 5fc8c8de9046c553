"""email_marketing hooks, run inside atomicplug's database transaction (self-contained)."""

from sqlalchemy import text

# Explicit id (max + 1): INTEGER PRIMARY KEY does not auto-increment on PostgreSQL.
# NOT EXISTS: a reinstall after `uninstall --keep-data` must not add a second welcome.
WELCOME = text(
    "INSERT INTO email_campaigns (id, subject, body) "
    "SELECT (SELECT COALESCE(MAX(id), 0) + 1 FROM email_campaigns), 'Welcome', 'Thanks for joining!' "
    "WHERE NOT EXISTS (SELECT 1 FROM email_campaigns WHERE subject = 'Welcome')"
)


def install(conn, ctx):
    conn.execute(WELCOME)
