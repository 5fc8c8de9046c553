"""Install hooks: run inside atomicplug's database transaction."""

from sqlalchemy import text


def install(conn, ctx):
    conn.execute(text("INSERT INTO email_campaigns (subject, body) VALUES ('Welcome', 'Thanks for joining!')"))


def upgrade(conn, ctx, from_version):
    conn.execute(text("INSERT INTO email_campaign_stats (campaign_id) SELECT id FROM email_campaigns"))
