"""sms_notifications: text messages to email_marketing's subscribers (``addons.sms_notifications``)."""

VERSION = "1.1.0"
TABLES = ("sms_contacts", "sms_messages")

# Imported after VERSION, which the routes report.
from .routes import router

__all__ = ["TABLES", "VERSION", "router"]
