-- ai_chatbot 1.0.0: chat sessions and their messages.
-- Ids are UUID strings made by the application: portable across SQLite and PostgreSQL.
CREATE TABLE chat_sessions (
    id VARCHAR(36) PRIMARY KEY,
    user_id VARCHAR(64),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE chat_messages (
    id VARCHAR(36) PRIMARY KEY,
    session_id VARCHAR(36) NOT NULL REFERENCES chat_sessions (id),
    role VARCHAR(16) NOT NULL,
    content TEXT NOT NULL,
    engine VARCHAR(32),
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX chat_messages_session ON chat_messages (session_id, created_at);
