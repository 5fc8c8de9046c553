DROP INDEX email_campaign_stats_campaign;
DROP TABLE email_campaign_stats;
