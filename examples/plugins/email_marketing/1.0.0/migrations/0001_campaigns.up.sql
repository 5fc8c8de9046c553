CREATE TABLE email_campaigns (
    id INTEGER PRIMARY KEY,
    subject VARCHAR(200) NOT NULL,
    body TEXT NOT NULL,
    sent_at TIMESTAMP
);
CREATE TABLE email_subscribers (
    id INTEGER PRIMARY KEY,
    email VARCHAR(320) NOT NULL UNIQUE,
    subscribed_at TIMESTAMP NOT NULL
);
