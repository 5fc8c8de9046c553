-- 1.1.0: per-campaign delivery statistics; a semicolon inside a string; is fine.
CREATE TABLE email_campaign_stats (
    campaign_id INTEGER NOT NULL REFERENCES email_campaigns (id),
    delivered INTEGER NOT NULL DEFAULT 0,
    opened INTEGER NOT NULL DEFAULT 0,
    note VARCHAR(100) DEFAULT 'counts; updated hourly'
);
CREATE INDEX email_campaign_stats_campaign ON email_campaign_stats (campaign_id);
