DROP TABLE email_subscribers;
DROP TABLE email_campaigns;
