"""Request and response bodies of the service (pydantic: validated, documented in /docs)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Hard limits a request can never exceed (the CLI may lower them, not raise them).
MAX_K = 1000
MAX_EVENTS = 1000
MAX_ID_CHARS = 256
MAX_CATEGORIES = 100


class ServeLimits(BaseModel):
    """Per-service limits; requests beyond them get a 4xx, never a crash."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_body_bytes: int = Field(1 << 20, ge=1024, description="largest request body accepted (413 above)")
    max_k: int = Field(100, ge=1, le=MAX_K)
    max_events: int = Field(200, ge=1, le=MAX_EVENTS, description="events per request")
    max_explain: int = Field(10, ge=1, le=50, description="items explained per /explain request")
    request_timeout_s: float = Field(30.0, gt=0, le=600, description="deadline of one request, body read "
                                     "included (503 after it)")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventIn(_Strict):
    """One behaviour event as a client sends it; cleaned by the same rules as ``shopseq ingest``."""

    item_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    event_type: str | None = Field(
        None, max_length=64, description="view, cart, fav, purchase, review or an alias (pv, buy, ...); "
        "missing = view")
    timestamp: int | str | None = Field(
        None, description="ms since the epoch (s / us by magnitude) or ISO-8601; missing = now")
    session_id: str | None = Field(None, max_length=MAX_ID_CHARS)
    category: str | None = Field(None, max_length=MAX_ID_CHARS)
    price: float | None = None
    quantity: int | None = None


class Filters(_Strict):
    k: int = Field(10, ge=1, le=MAX_K, description="how many items")
    head: Literal["next_item", "next_purchase"] = Field(
        "next_item", description="rank by the next item, or by the next PURCHASED item (models trained with a "
        "purchase head, aux.next_purchase > 0; PyTorch backend)")
    filter_seen: bool = Field(True, description="leave out items already in the history")
    include_categories: list[str] | None = Field(
        None, max_length=MAX_CATEGORIES, description="only items in one of these categories (any level)")
    exclude_categories: list[str] | None = Field(
        None, max_length=MAX_CATEGORIES, description="no items in these categories (any level)")


class HistoryQuery(_Strict):
    """Whose history: a user's stored one, explicit recent events, or both (events come after)."""

    user_id: str | None = Field(None, min_length=1, max_length=MAX_ID_CHARS,
                                description="user id as in the source data; pseudonymised by the service")
    user_pseudonym: str | None = Field(None, min_length=1, max_length=MAX_ID_CHARS,
                                       description="the stored pseudonym instead of the raw id (web page)")
    events: list[EventIn] | None = Field(None, max_length=MAX_EVENTS,
                                         description="recent events, oldest first; not stored")

    @model_validator(mode="after")
    def _one_user(self) -> HistoryQuery:
        if self.user_id is not None and self.user_pseudonym is not None:
            raise ValueError("give user_id or user_pseudonym, not both")
        if self.user_id is None and self.user_pseudonym is None and not self.events:
            raise ValueError("give user_id (or user_pseudonym), events, or both")
        return self


class RecommendRequest(HistoryQuery, Filters):
    include_history: bool = Field(False, description="return the history the model read")


class ItemInfo(BaseModel):
    item_id: str
    category: str | None = None
    category_path: list[str] | None = None
    brand: str | None = None
    price: float | None = None


class ScoredItem(ItemInfo):
    rank: int
    score: float


class HistoryEvent(ItemInfo):
    position: int = Field(description="0 = oldest event of the history shown")
    event_type: str
    timestamp: int
    known: bool = Field(description="the model knows this item (unknown items are ignored)")


class RecommendResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    user_pseudonym: str | None
    known_user: bool
    cold_start: bool = Field(description="no usable history: recent popular items instead of the model")
    history_length: int = Field(description="events the model read")
    items: list[ScoredItem]
    unknown_items: list[str] = Field(description="input item ids the model does not know (ignored)")
    model: str
    backend: str
    head: str = Field(description="what the items are ranked by: next_item or next_purchase")
    history: list[HistoryEvent] | None = None


class EventsRequest(_Strict):
    user_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class RejectedEvent(BaseModel):
    index: int = Field(description="position in the request's events list")
    reason: str
    field: str | None


class EventsResponse(BaseModel):
    user_pseudonym: str
    accepted: int
    duplicates: int
    rejected: list[RejectedEvent]
    history_length: int = Field(description="events of this user the service now holds (up to the model window)")


class ExplainRequest(HistoryQuery, Filters):
    k: int = Field(3, ge=1, le=MAX_K, description="how many of the top recommendations to explain")
    items: list[str] | None = Field(None, max_length=50, description="explain these items instead of the top k")


class Contribution(BaseModel):
    position: int = Field(description="index into the response's history")
    item_id: str
    occlusion: float = Field(description="score drop of the explained item when this event is removed")
    attention: float | None = Field(None, description="last-layer attention of the final position (SASRec)")


class ExplainedItem(ItemInfo):
    score: float
    contributions: list[Contribution] = Field(description="history events, most supporting first")


class ExplainResponse(BaseModel):
    user_pseudonym: str | None
    history: list[HistoryEvent]
    explained: list[ExplainedItem]
    unknown_items: list[str]
    attention_available: bool
    method: str


class ForgetResponse(BaseModel):
    user_pseudonym: str
    events_deleted: int = Field(description="events removed from the store")
    profile_removed: bool = Field(description="the user had a served profile, now dropped")
    derived_files: int = Field(description="workspace caches / app outputs the user was removed from")


class ErrorBody(BaseModel):
    error: str
    details: list[dict] | None = None
