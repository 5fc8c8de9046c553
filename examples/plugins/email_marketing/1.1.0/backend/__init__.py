"""email_marketing: campaigns, subscribers and per-campaign statistics (``addons.email_marketing``)."""

VERSION = "1.1.0"
TABLES = ("email_campaigns", "email_subscribers", "email_campaign_stats")

# Imported after VERSION, which the routes report.
from .routes import router

__all__ = ["TABLES", "VERSION", "router"]
