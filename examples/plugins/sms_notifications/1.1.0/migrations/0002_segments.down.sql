-- Needs SQLite >= 3.35 for DROP COLUMN (PostgreSQL: any version).
ALTER TABLE sms_messages DROP COLUMN segments;
