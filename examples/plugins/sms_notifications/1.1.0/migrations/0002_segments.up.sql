-- sms_notifications 1.1.0: billed segments per message (the upgrade hook fills existing rows).
ALTER TABLE sms_messages ADD COLUMN segments INTEGER NOT NULL DEFAULT 1;
