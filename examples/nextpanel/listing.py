"""The plugin list as the page reads it: built once per change, answered from bytes.

Fifty admins listing and searching while installs run (bench/README.md
"Marketplace under load") must cost the server a comparison and a few byte
joins per request, not a rebuild of 200 cards and a validation of the
response. So a :class:`Listing` keeps the catalogue's JSON in pieces: the head
(repository, categories, updates) and each card's JSON with the text a search
matches; a search joins the cards that match. :class:`ListingCache` builds one
listing per change of what it shows (the registry, the manifest, load
failures), one build at a time: requests that find a build running wait for
it instead of building too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import attrs

from .models import Catalogue

__all__ = ["Listing", "ListingCache"]


@attrs.frozen
class Listing:
    """One catalogue as JSON: whole (``data``) and in pieces for searches."""

    key: Any
    catalogue: Catalogue
    data: bytes
    head: bytes  # '{"repository":…,"categories":…,"updates":N,"plugins":['
    cards: tuple[tuple[str, str, bytes], ...]  # (category, lower-cased "id name description", card JSON)
    #: Answers already given by this listing (it never changes): a page's filters repeat.
    _searched: dict[tuple[str, str], bytes] = attrs.field(factory=dict, eq=False, repr=False)

    #: At most this many distinct searches are kept per listing.
    MAX_SEARCHES = 256

    @classmethod
    def build(cls, key: Any, catalogue: Catalogue) -> Listing:
        head = catalogue.model_dump_json(exclude={"plugins"}).encode()[:-1] + b',"plugins":['
        cards = tuple(
            (card.category, f"{card.id} {card.name} {card.description}".lower(), card.model_dump_json().encode())
            for card in catalogue.plugins
        )
        return cls(key=key, catalogue=catalogue, data=head + b",".join(c[2] for c in cards) + b"]}", head=head, cards=cards)

    def search(self, query: str | None, category: str | None) -> bytes:
        """The catalogue with only the cards whose text holds every word of ``query`` and whose category is ``category``."""
        key = (query or "", category or "")
        found = self._searched.get(key)
        if found is None:
            words = key[0].lower().split()
            chosen = [card for cat, text, card in self.cards if (not category or cat == category) and all(w in text for w in words)]
            found = self.head + b",".join(chosen) + b"]}"
            if len(self._searched) < self.MAX_SEARCHES:
                self._searched[key] = found
        return found


class ListingCache:
    """The current listing, rebuilt (once, whoever asks first) when its key changes."""

    def __init__(self, build: Callable[[Any], Catalogue]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._listing: Listing | None = None

    def peek(self, key: Any) -> Listing | None:
        """The listing if it is the one for ``key``; never builds (cheap enough for the event loop)."""
        listing = self._listing
        return listing if listing is not None and listing.key == key else None

    def get(self, key: Any, source: Any) -> Listing:
        """The listing for ``key``, built from ``source`` if needed; blocking (a worker thread's call)."""
        with self._lock:
            listing = self.peek(key)
            if listing is None:
                listing = self._listing = Listing.build(key, self._build(source))
            return listing
