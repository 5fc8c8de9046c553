-- ai_chatbot 1.1.0: a title per session (filled by the upgrade hook) and a 1-5 rating per reply.
ALTER TABLE chat_sessions ADD COLUMN title VARCHAR(200);
ALTER TABLE chat_messages ADD COLUMN rating INTEGER;
