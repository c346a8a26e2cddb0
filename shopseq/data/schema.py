"""The canonical event schema every source is mapped into.

One row per behaviour event. Timestamps are int64 **milliseconds since the Unix epoch, UTC**
(sources in seconds, microseconds or ISO strings are converted at ingest). Sources without any
clock (e.g. the SASRec ``user item`` text files) get *ordinal* timestamps: the event's position in
the user's sequence, flagged on the store so no one mistakes them for dates.
"""

from __future__ import annotations

from enum import IntEnum

TIMESTAMP_UNIT = "ms"  # unit of the canonical ``timestamp`` column


class EventType(IntEnum):
    """Behaviour kinds, ordered roughly by commitment. The integer is the stored code."""

    VIEW = 0
    CART = 1
    FAV = 2
    PURCHASE = 3
    REVIEW = 4

    @property
    def label(self) -> str:
        return self.name.lower()


EVENT_TYPE_NAMES: tuple[str, ...] = tuple(t.label for t in EventType)

# Default source-name -> canonical mapping (case-insensitive, trimmed). Users extend or replace it
# with ``EventTypeMapping``; names that map nowhere are rejected with reason ``unknown_event_type``.
DEFAULT_EVENT_ALIASES: dict[str, str] = {
    # views / clicks
    "view": "view", "views": "view", "pv": "view", "click": "view", "clicks": "view",
    "page_view": "view", "pageview": "view", "detail": "view", "impression": "view",
    # add to cart
    "cart": "cart", "carts": "cart", "addtocart": "cart", "add_to_cart": "cart", "add-to-cart": "cart",
    # favourites / wish lists
    "fav": "fav", "favs": "fav", "favorite": "fav", "favourite": "fav", "wishlist": "fav", "like": "fav",
    # purchases
    "purchase": "purchase", "purchases": "purchase", "buy": "purchase", "order": "purchase",
    "orders": "purchase", "transaction": "purchase", "checkout": "purchase",
    # reviews / ratings
    "review": "review", "reviews": "review", "rating": "review", "rate": "review",
}

# Canonical event columns in store order: (name, DuckDB type, required, meaning).
EVENT_COLUMNS: tuple[tuple[str, str, bool, str], ...] = (
    ("user_id", "VARCHAR", True, "pseudonymised user id (HMAC-SHA256 of the source id, 16 hex chars)"),
    ("item_id", "VARCHAR", True, "item id as in the source, trimmed"),
    ("timestamp", "BIGINT", True, "milliseconds since the Unix epoch, UTC (or ordinal position)"),
    ("event_type", "UTINYINT", True, "EventType code: 0 view, 1 cart, 2 fav, 3 purchase, 4 review"),
    ("session_id", "VARCHAR", False, "source session id, if any"),
    ("category", "VARCHAR", False, "item category at event time, if any"),
    ("price", "DOUBLE", False, "unit price, if any"),
    ("quantity", "INTEGER", False, "quantity, if any"),
    ("seq", "BIGINT", True, "global ingest order; breaks timestamp ties stably"),
    ("batch_id", "INTEGER", True, "the ingest batch that added the row"),
)

# Columns a source may supply (all read as text first, then coerced by the cleaning step).
SOURCE_FIELDS: tuple[str, ...] = (
    "user_id", "item_id", "timestamp", "event_type", "session_id", "category", "price", "quantity",
)

# Optional item attribute table.
ITEM_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("item_id", "VARCHAR", "item id as in the events"),
    ("category_path", "VARCHAR[]", "category levels from the root, e.g. ['Beauty', 'Skin', 'Face']"),
    ("brand", "VARCHAR", "brand, if known"),
    ("price", "DOUBLE", "list price, if known"),
    ("attributes", "VARCHAR[]", "other attribute tokens (e.g. S3-Rec attribute ids)"),
)


def event_type_enum_sql() -> str:
    """A SQL CASE turning a code into its name, for human-facing queries."""
    whens = " ".join(f"WHEN {t.value} THEN '{t.label}'" for t in EventType)
    return f"CASE event_type {whens} END"
