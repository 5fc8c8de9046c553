DROP INDEX sms_messages_status;
DROP TABLE sms_messages;
DROP TABLE sms_contacts;
