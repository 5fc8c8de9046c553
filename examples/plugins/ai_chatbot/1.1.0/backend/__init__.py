"""ai_chatbot: the NextPanel support chatbot as an atomicplug addon.

Imported by the panel as ``addons.ai_chatbot``; the loader mounts ``router``.
"""

VERSION = "1.1.0"
TABLES = ("chat_sessions", "chat_messages")

# Imported after VERSION, which the routes report.
from .engine import configure  # atomicplug's loader hands the plugin's settings here
from .routes import router

__all__ = ["TABLES", "VERSION", "configure", "router"]
