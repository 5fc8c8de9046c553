"""Reply engines: OpenAI when available, a deterministic rule-based engine otherwise.

OpenAI is used only when the ``openai`` package is importable AND an API key
is known: the plugin's ``openai_api_key`` setting (given by the panel's admin,
handed over by atomicplug's loader through :func:`configure`), else
``OPENAI_API_KEY``. The model is the ``model`` setting, else ``OPENAI_MODEL``,
default ``gpt-4o-mini``. If an OpenAI call fails, the rule-based engine
answers instead, so the chat never breaks because of the network.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import os
import re
from collections.abc import Sequence
from typing import Protocol

log = logging.getLogger(__name__)

__all__ = ["OpenAIEngine", "Reply", "ReplyEngine", "RuleBasedEngine", "configure", "openai_key", "reply_to", "select_engine"]

#: The plugin's settings, as the loader last handed them (metadata.json "settings").
_settings: dict = {}


def configure(settings: dict) -> None:
    """Take the plugin's settings (called by atomicplug's loader at import and when they change)."""
    _settings.clear()
    _settings.update(settings)


def openai_key() -> str:
    """The OpenAI API key: the ``openai_api_key`` setting, else ``OPENAI_API_KEY`` ("" when neither)."""
    return str(_settings.get("openai_api_key") or os.environ.get("OPENAI_API_KEY", "")).strip()

SYSTEM_PROMPT = (
    "You are the NextPanel billing panel assistant. Answer briefly and concretely about invoices, "
    "payments, subscriptions and panel plugins. If you do not know, offer to open a support ticket."
)


class Reply:
    """One answer and the engine that produced it."""

    __slots__ = ("content", "engine")

    def __init__(self, content: str, engine: str) -> None:
        self.content = content
        self.engine = engine

    def __repr__(self) -> str:
        return f"Reply({self.content!r}, engine={self.engine!r})"


class ReplyEngine(Protocol):
    name: str

    def reply(self, message: str, history: Sequence[tuple[str, str]] = ()) -> Reply: ...


# -- the built-in engine ----------------------------------------------------------

GREETING = "Hello! I'm the NextPanel assistant. I can help with invoices, payments and plugins. What do you need?"
PAYMENT = (
    "To pay an invoice, open Billing > Invoices, select the invoice and click \"Pay now\". "
    "You can pay by card or bank transfer; once paid, the invoice is marked Paid and its receipt can be downloaded."
)
REFUND = (
    "Refunds are requested from Billing > Invoices: open the paid invoice and choose \"Request refund\". "
    "Our billing team answers within two business days."
)
PLUGINS = (
    "Plugins are managed in Marketplace: pick a plugin and click Install. Every install, upgrade or rollback "
    "is one transaction, so a failed install leaves your panel exactly as it was."
)
THANKS = "You're welcome! Anything else I can help with?"
EMPTY = "Please type a question and I'll do my best to help."
FALLBACK = (
    "I'm not sure I understood. I can help with invoices and payments, refunds, or plugins; "
    "for anything else, open a support ticket and a person will answer."
)

_RULES: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"refund", "refunds", "chargeback", "money back"}), REFUND),
    (
        frozenset({"invoice", "invoices", "billing", "bill", "pay", "paying", "payment", "payments", "charge",
                   "charged", "card", "receipt"}),
        PAYMENT,
    ),
    (frozenset({"plugin", "plugins", "addon", "addons", "marketplace", "extension", "install", "uninstall"}), PLUGINS),
    (frozenset({"hello", "hi", "hey", "hallo", "greetings", "good morning", "good afternoon", "good evening"}), GREETING),
    (frozenset({"thanks", "thank you", "thx", "cheers"}), THANKS),
)

_WORD = re.compile(r"[a-z']+")


class RuleBasedEngine:
    """Keyword rules, first match wins: a question beats a greeting ("hi, how do I pay?")."""

    name = "rules"

    def reply(self, message: str, history: Sequence[tuple[str, str]] = ()) -> Reply:
        words = _WORD.findall(message.lower())
        if not words:
            return Reply(EMPTY, self.name)
        tokens = set(words) | {f"{a} {b}" for a, b in itertools.pairwise(words)}
        for keywords, answer in _RULES:
            if tokens & keywords:
                return Reply(answer, self.name)
        return Reply(FALLBACK, self.name)


# -- OpenAI --------------------------------------------------------------------------


class OpenAIEngine:
    """Chat completions through the official ``openai`` client; rules if the call fails."""

    name = "openai"

    def __init__(self, api_key: str, model: str | None = None, timeout: float = 20.0) -> None:
        from openai import OpenAI  # only constructed when importable

        self.model = model or _settings.get("model") or os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
        self._client = OpenAI(api_key=api_key, timeout=timeout)
        self._fallback = RuleBasedEngine()

    def reply(self, message: str, history: Sequence[tuple[str, str]] = ()) -> Reply:
        messages = [{"role": "system", "content": SYSTEM_PROMPT}]
        messages += [{"role": role, "content": content} for role, content in history[-20:] if role in ("user", "assistant")]
        messages.append({"role": "user", "content": message})
        try:
            response = self._client.chat.completions.create(model=self.model, messages=messages)
            content = (response.choices[0].message.content or "").strip()
        except Exception as exc:  # noqa: BLE001 - network, quota, auth: the panel keeps answering
            log.warning("ai_chatbot: OpenAI failed (%s); answering with the rule-based engine", exc)
            return self._fallback.reply(message, history)
        return Reply(content, self.name) if content else self._fallback.reply(message, history)


def openai_available() -> bool:
    return bool(openai_key()) and importlib.util.find_spec("openai") is not None


def select_engine() -> ReplyEngine:
    """OpenAI when the package is importable and a key is known; the rules otherwise."""
    if openai_available():
        try:
            return OpenAIEngine(openai_key())
        except Exception as exc:  # noqa: BLE001 - a broken openai install must not break the chat
            log.warning("ai_chatbot: cannot use OpenAI (%s); using the rule-based engine", exc)
    return RuleBasedEngine()


def reply_to(message: str, history: Sequence[tuple[str, str]] = ()) -> Reply:
    return select_engine().reply(message, history)
