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
    upgrade(conn, ctx, None)  # statistics rows for the campaigns (the welcome; any kept data)


def upgrade(conn, ctx, from_version):
    """1.0.x -> 1.1.0: a statistics row for every existing campaign."""
    conn.execute(
        text(
            "INSERT INTO email_campaign_stats (campaign_id) SELECT id FROM email_campaigns c "
            "WHERE NOT EXISTS (SELECT 1 FROM email_campaign_stats s WHERE s.campaign_id = c.id)"
        )
    )
