-- Needs SQLite >= 3.35 for DROP COLUMN (PostgreSQL: any version).
ALTER TABLE chat_messages DROP COLUMN rating;
ALTER TABLE chat_sessions DROP COLUMN title;
