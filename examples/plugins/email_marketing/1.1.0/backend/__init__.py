"""Email marketing backend: campaigns and subscribers."""

VERSION = "1.1.0"
TABLES = ("email_campaigns", "email_subscribers")
