DROP INDEX chat_messages_session;
DROP TABLE chat_messages;
DROP TABLE chat_sessions;
