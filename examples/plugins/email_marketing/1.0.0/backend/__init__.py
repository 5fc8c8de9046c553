"""email_marketing: campaigns and subscribers (imported by the panel as ``addons.email_marketing``)."""

VERSION = "1.0.0"
TABLES = ("email_campaigns", "email_subscribers")

# Imported after VERSION, which the routes report.
from .routes import router

__all__ = ["TABLES", "VERSION", "router"]
