-- sms_notifications 1.0.0: phone numbers for email_marketing's subscribers, and queued messages.
-- sms_contacts references email_subscribers: this plugin requires email_marketing.
CREATE TABLE sms_contacts (
    subscriber_id INTEGER PRIMARY KEY REFERENCES email_subscribers (id),
    phone VARCHAR(32) NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE sms_messages (
    id VARCHAR(36) PRIMARY KEY,
    subscriber_id INTEGER,
    to_number VARCHAR(32) NOT NULL,
    body TEXT NOT NULL,
    status VARCHAR(16) NOT NULL,
    created_at TIMESTAMP NOT NULL,
    sent_at TIMESTAMP
);
CREATE INDEX sms_messages_status ON sms_messages (status, created_at);
